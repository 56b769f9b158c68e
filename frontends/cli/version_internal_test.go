package cli

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The linker's stamp wins; without it the Go build info gives the module version (go
// install ...@v1.2.3), the VCS revision and the dirty flag; without either, devel/unknown.
func TestResolveVersion(t *testing.T) {
	defer func(f func() (*debug.BuildInfo, bool)) { readBuildInfo = f }(readBuildInfo)
	info := &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshmedic/meshmedic", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}}}
	readBuildInfo = func() (*debug.BuildInfo, bool) { return info, true }

	v := resolveVersion(BuildInfo{})
	assert.Equal(t, "v1.2.3", v.Version)
	assert.Equal(t, "0123abcd", v.Commit)
	assert.True(t, v.Dirty)
	assert.Equal(t, "2026-01-02T03:04:05Z", v.CommitTime)
	assert.Equal(t, "github.com/meshmedic/meshmedic", v.Module)
	assert.Contains(t, v.text(), "commit: 0123abcd (dirty)")

	v = resolveVersion(BuildInfo{Version: "v9.9.9", Commit: "feedbeef"})
	assert.Equal(t, "v9.9.9", v.Version, "the release stamp wins")
	assert.Equal(t, "feedbeef", v.Commit)

	info.Main.Version = "(devel)"
	info.Settings = nil
	v = resolveVersion(BuildInfo{})
	assert.Equal(t, "devel", v.Version, "a work-tree build without a stamp")
	assert.Equal(t, "unknown", v.Commit)
	assert.False(t, v.Dirty)

	readBuildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	assert.Equal(t, "devel", resolveVersion(BuildInfo{}).Version)
}
