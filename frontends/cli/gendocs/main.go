// Command gendocs writes meshmedic's command-line reference, docs/cli.md, from the
// command tree in frontends/cli. Run it from the repository root:
//
//	go run ./frontends/cli/gendocs            # rewrite docs/cli.md
//	go run ./frontends/cli/gendocs -check     # exit 1 when docs/cli.md is stale
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

func main() {
	out := flag.String("out", "docs/cli.md", "file to write")
	check := flag.Bool("check", false, "do not write: exit 1 when the file differs from what would be written")
	flag.Parse()
	md, err := cli.Markdown()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
		os.Exit(2)
	}
	if *check {
		cur, err := os.ReadFile(*out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
			os.Exit(2)
		}
		if !bytes.Equal(cur, []byte(md)) {
			fmt.Fprintf(os.Stderr, "gendocs: %s is stale: run %s\n", *out, cli.DocsCommand)
			os.Exit(1)
		}
		return
	}
	if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
		os.Exit(2)
	}
}
