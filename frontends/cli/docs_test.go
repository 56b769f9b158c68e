package cli

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	ucli "github.com/urfave/cli/v2"
)

const cliDoc = "../../docs/cli.md"

// compareDoc says whether the committed reference matches the generated one, and where
// they first differ.
func compareDoc(committed, generated string) error {
	if committed == generated {
		return nil
	}
	c, g := strings.Split(committed, "\n"), strings.Split(generated, "\n")
	for i := 0; i < max(len(c), len(g)); i++ {
		var cl, gl string
		if i < len(c) {
			cl = c[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if cl != gl || i >= len(c) || i >= len(g) {
			return fmt.Errorf("docs/cli.md is stale (first difference at line %d:\n  file:      %q\n  generated: %q)\nregenerate it: make docs (or %s from the repository root)", i+1, cl, gl, DocsCommand)
		}
	}
	return fmt.Errorf("docs/cli.md is stale: regenerate it: make docs (or %s from the repository root)", DocsCommand)
}

func TestCLIReferenceUpToDate(t *testing.T) {
	want, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(cliDoc)
	if err != nil {
		t.Fatalf("reading the committed reference: %v\ncreate it: make docs (or %s from the repository root)", err, DocsCommand)
	}
	if err := compareDoc(string(got), want); err != nil {
		t.Fatal(err)
	}
}

// The staleness check must be able to fail: a changed flag or a dropped line is caught.
func TestCompareDocCanFail(t *testing.T) {
	md, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	for name, edited := range map[string]string{
		"changed default": strings.Replace(md, "`10s`", "`15s`", 1),
		"dropped line":    md[:strings.LastIndex(strings.TrimRight(md, "\n"), "\n")+1],
		"extra line":      md + "stale\n",
	} {
		if edited == md {
			t.Fatalf("%s: the edit did not change the document", name)
		}
		err := compareDoc(edited, md)
		if err == nil || !strings.Contains(err.Error(), DocsCommand) {
			t.Errorf("%s: compareDoc = %v, want a stale error naming %q", name, err, DocsCommand)
		}
	}
}

// The reference depends on the code only, not on the environment of whoever generates it.
func TestMarkdownIgnoresEnvironment(t *testing.T) {
	before, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	t.Setenv("NODE_NAME", "some-node")
	after, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatal("Markdown output changed with KUBECONFIG/NODE_NAME set")
	}
}

// Every visible flag of every command appears in that command's section, with its env
// vars and aliases; hidden flags do not.
func TestMarkdownListsEveryFlag(t *testing.T) {
	md, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp("meshmedic", BuildInfo{}, Streams{})
	paths := walkCommands(app.Commands, nil)
	if len(paths) < 6 {
		t.Fatalf("only %d commands found", len(paths))
	}
	for _, path := range paths {
		line := commandLine(path)
		start := strings.Index(md, "\n### "+line+"\n")
		if start < 0 {
			t.Errorf("no section for %q", line)
			continue
		}
		section := md[start+1:]
		for _, next := range []string{"\n### ", "\n## "} {
			if end := strings.Index(section, next); end >= 0 {
				section = section[:end]
			}
		}
		for _, f := range path[len(path)-1].Flags {
			df := f.(ucli.DocGenerationFlag)
			hidden := false
			if v, ok := f.(ucli.VisibleFlag); ok {
				hidden = !v.IsVisible()
			}
			for _, n := range f.Names() {
				dash := "--"
				if len(n) == 1 {
					dash = "-"
				}
				has := strings.Contains(section, "`"+dash+n+"`")
				if has == hidden {
					t.Errorf("%s: flag %s%s listed=%v, hidden=%v", line, dash, n, has, hidden)
				}
			}
			for _, e := range df.GetEnvVars() {
				if !hidden && !strings.Contains(section, "`"+e+"`") {
					t.Errorf("%s: env var %s of --%s not listed", line, e, f.Names()[0])
				}
			}
		}
	}
	if strings.Contains(md, "max-line-bytes") {
		t.Error("hidden flag --max-line-bytes is documented")
	}
}

// Every table row has as many cells as its header: usage strings with '|' are escaped.
func TestMarkdownTablesWellFormed(t *testing.T) {
	md, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	cells := func(row string) int { return strings.Count(strings.ReplaceAll(row, `\|`, ""), "|") }
	header, inCode := 0, false
	for i, row := range strings.Split(md, "\n") {
		if strings.HasPrefix(row, "```") {
			inCode = !inCode
		}
		switch {
		case inCode || !strings.HasPrefix(row, "|"):
			header = 0
		case header == 0:
			header = cells(row)
		case cells(row) != header:
			t.Errorf("line %d has %d cell separators, its table's header %d: %s", i+1, cells(row), header, row)
		}
	}
}

// DESIGN.md's fixed JSON fields exist under those names in the output types: renaming
// one fails here, not in a user's script.
func TestJSONContractFieldsExist(t *testing.T) {
	for _, o := range jsonOutputs {
		rows, err := jsonFields(reflect.TypeOf(o.value), "")
		if err != nil {
			t.Fatalf("%s: %v", o.command, err)
		}
		have := map[string]bool{}
		for _, r := range rows {
			have[r.path] = true
		}
		for _, p := range o.contract {
			if !have[p] {
				t.Errorf("%s: contract field %q is missing from the output type", o.command, p)
			}
		}
	}
}

// A field without a description makes Markdown fail, naming the field and where to add it.
func TestJSONFieldWithoutDescriptionFails(t *testing.T) {
	type undocumented struct {
		Checked int `json:"checked"`
	}
	_, err := jsonFields(reflect.TypeOf(undocumented{}), "")
	if err == nil || !strings.Contains(err.Error(), `"checked"`) || !strings.Contains(err.Error(), "jsonFieldDocs") {
		t.Fatalf("jsonFields = %v, want an error naming the field and jsonFieldDocs", err)
	}
}

// Every description belongs to a field that exists: a removed field leaves no stale doc.
func TestJSONFieldDocsAllUsed(t *testing.T) {
	used := map[string]map[string]bool{}
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == timeType {
			return
		}
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "" {
				name = sf.Name
			}
			if used[t.String()] == nil {
				used[t.String()] = map[string]bool{}
			}
			used[t.String()][name] = true
			visit(sf.Type)
		}
	}
	for _, o := range jsonOutputs {
		visit(reflect.TypeOf(o.value))
	}
	for typ, fields := range jsonFieldDocs {
		for name := range fields {
			if !used[typ][name] {
				t.Errorf("jsonFieldDocs[%q][%q] describes a field that no output has: remove it from frontends/cli/docs.go", typ, name)
			}
		}
	}
}

func TestCellEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"table|wide":        `table\|wide`,
		"/proc/<pid>/net":   `/proc/\<pid\>/net`,
		"a\nb":              "a b",
		"dst.hbone_addr *x": `dst.hbone\_addr \*x`,
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFlagDefault(t *testing.T) {
	for _, tc := range []struct {
		f    ucli.DocGenerationFlag
		want string
	}{
		{&ucli.StringFlag{Name: "prober", Value: "auto"}, "`auto`"},
		{&ucli.StringFlag{Name: "node"}, ""},
		{&ucli.BoolFlag{Name: "yes"}, ""},
		{&ucli.IntFlag{Name: "max-actions", Value: 5}, "`5`"},
		{&ucli.DurationFlag{Name: "confirm", Value: 10 * time.Second}, "`10s`"},
		{&ucli.DurationFlag{Name: "interval", DefaultText: "5×--tick"}, "5×--tick"},
		{&ucli.StringFlag{Name: "x", Value: "a", DefaultText: "from the ConfigMap"}, "from the ConfigMap"},
	} {
		if got := flagDefault(tc.f); got != tc.want {
			t.Errorf("flagDefault(--%s) = %q, want %q", tc.f.Names()[0], got, tc.want)
		}
	}
}
