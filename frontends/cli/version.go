package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	ucli "github.com/urfave/cli/v2"
)

// Version is what `meshmedic version` reports (`-o json`: these field names).
type Version struct {
	// Version is the release (`v0.1.0`): the linker's -X main.version when set (make build,
	// release builds), else the module version from the Go build info (`go install
	// ...@v0.1.0`), else "devel".
	Version string `json:"version"`
	// Commit is the VCS revision: -X main.commit, else the build info's vcs.revision.
	Commit string `json:"commit"`
	// Dirty is true when the build info says the work tree had uncommitted changes
	// (vcs.modified).
	Dirty bool `json:"dirty"`
	// CommitTime is the build info's vcs.time, when known.
	CommitTime string `json:"commitTime,omitempty"`
	// Module is the main module's path.
	Module    string `json:"module,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// readBuildInfo is debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// resolveVersion merges the linker's stamp with the Go build info.
func resolveVersion(info BuildInfo) Version {
	v := Version{Version: info.Version, Commit: info.Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := readBuildInfo(); ok && bi != nil {
		v.Module = bi.Main.Path
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.modified":
				v.Dirty = s.Value == "true"
			case "vcs.time":
				v.CommitTime = s.Value
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

func (v Version) text() string {
	commit := v.Commit
	if v.Dirty {
		commit += " (dirty)"
	}
	return fmt.Sprintf("meshmedic %s\ncommit: %s\ngo: %s %s\n", v.Version, commit, v.GoVersion, v.Platform)
}

// versionFlag is the app's --version.
var versionFlag = &ucli.BoolFlag{Name: "version", Usage: "print the version and exit (`version -o json` for the build details)"}

func versionCommand(info BuildInfo, s Streams) *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print version, commit and Go version",
		Description: "Prints the release version, the VCS commit (with \"(dirty)\" for a build from a modified work\n" +
			"tree) and the Go version. Release builds are stamped by the linker; `go install` builds read\n" +
			"the same facts from the Go build info. -o json prints them as one object.",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: outTable, Usage: "output format: text (table) or json"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments (got %q)", c.Args().First())
			}
			v := resolveVersion(info)
			switch f := c.String("output"); f {
			case outTable, "text":
				_, err := fmt.Fprint(s.Out, v.text())
				return err
			case outJSON, outYAML:
				return writeStructured(s.Out, f, v)
			default:
				return usagef("--output %q: want text, json or yaml", f)
			}
		},
	}
}
