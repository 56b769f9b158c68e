package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	ucli "github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// Output formats, as kubectl spells them.
const (
	outTable = "table"
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
)

func outputFlag() *ucli.StringFlag {
	return &ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: outTable, Usage: "output format: table|wide|json|yaml"}
}

func outputFormat(c *ucli.Context) (string, error) {
	switch f := c.String("output"); f {
	case outTable, outWide, outJSON, outYAML:
		return f, nil
	default:
		return "", usagef("--output %q: want table, wide, json or yaml", f)
	}
}

// writeStructured renders v as JSON (indented, one trailing newline) or YAML.
func writeStructured(w io.Writer, format string, v any) error {
	if format == outYAML {
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// noHeadersFlag is kubectl's --no-headers.
func noHeadersFlag() *ucli.BoolFlag {
	return &ucli.BoolFlag{Name: "no-headers", Usage: "table and wide output: print no header line (as kubectl)"}
}

// table writes aligned columns, one line per row whatever the cells hold. The header is
// written with the first row: a table without rows prints nothing, so the caller can say
// so in a sentence.
type table struct {
	tw      *tabwriter.Writer
	headers []string
	rows    int
}

func newTable(w io.Writer, headers ...string) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), headers: headers}
}

// noHeaders drops the header line (--no-headers).
func (t *table) noHeaders(drop bool) *table {
	if drop {
		t.headers = nil
	}
	return t
}

func (t *table) row(cols ...string) {
	if t.rows == 0 && len(t.headers) > 0 {
		t.write(t.headers)
	}
	t.rows++
	t.write(cols)
}

func (t *table) write(cols []string) {
	for i, c := range cols {
		cols[i] = oneLine(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// oneLine keeps a cell on one line and in one column: line breaks and tabs (a multi-line
// error, a wrapped API message) are written as \n, \r and \t, other control bytes as \xNN.
func oneLine(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pods says "1 pod" or "N pods".
func pods(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}

func joinPorts(ports []uint16) string {
	if len(ports) == 0 {
		return "-"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
