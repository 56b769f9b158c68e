package cli

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

func TestSocketBackendFlag(t *testing.T) {
	r, err := socketBackend("proc", "/proc")
	require.NoError(t, err)
	assert.Nil(t, r, "proc: the agent's own ProcReader")
	_, err = socketBackend("ebpf", "/proc")
	assert.ErrorContains(t, err, "must be proc or netlink")
	podsim.RequirePrivileged(t) // root may setns: the start-up probe on its own process passes
	r, err = socketBackend("netlink", "/proc")
	require.NoError(t, err)
	assert.IsType(t, &netns.DiagReader{}, r)
}

func TestParseDurations(t *testing.T) {
	d, err := parseDurations(" 2m,15s ")
	require.NoError(t, err)
	assert.Equal(t, "[15s 2m0s]", fmtDurations(d))
	d, err = parseDurations("")
	require.NoError(t, err)
	assert.NotNil(t, d, "empty disables: a non-nil empty list")
	assert.Empty(t, d)
	_, err = parseDurations("15s,-1s")
	assert.Error(t, err)
	_, err = parseDurations("soon")
	assert.Error(t, err)
}

func fmtDurations(d []time.Duration) string { return fmt.Sprint(d) }
