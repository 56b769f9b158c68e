package netns

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prometheus/procfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sockstat4 = "sockets: used 149\nTCP: inuse 7 orphan 0 tw 2 alloc 9 mem 1\nUDP: inuse 3 mem 2\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n"
const sockstat6 = "TCP6: inuse 3\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n"

func TestParseInUse(t *testing.T) {
	var c SocketCounts
	require.True(t, parseInUse([]byte(sockstat4), &c))
	require.True(t, parseInUse([]byte(sockstat6), &c))
	assert.Equal(t, SocketCounts{TCP: 7, TCP6: 3, UDP: 3, UDP6: 1}, c)

	for name, bad := range map[string]string{
		"empty":          "",
		"no tcp line":    "sockets: used 1\nUDP: inuse 3 mem 2\n",
		"tcp not a num":  "TCP: inuse many orphan 0\n",
		"tcp negative":   "TCP: inuse -4\n",
		"tcp no inuse":   "TCP: orphan 0 tw 2\n",
		"garbage":        "\x00\xff\nTCP:inuse 3\n",
		"no space colon": "TCP:inuse 3\n",
	} {
		var c SocketCounts
		assert.False(t, parseInUse([]byte(bad), &c), name)
		assert.Zero(t, c.TCP, name)
	}
	// No trailing newline, and a later valid line after a malformed one.
	c = SocketCounts{}
	require.True(t, parseInUse([]byte("TCP: inuse x\nTCP: inuse 5"), &c))
	assert.Equal(t, 5, c.TCP)
}

func TestSocketsInUseFiles(t *testing.T) {
	root := t.TempDir()
	write := func(pid int, name, content string) {
		dir := filepath.Join(root, strconv.Itoa(pid), "net")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	write(10, "sockstat", sockstat4)
	write(10, "sockstat6", sockstat6)
	write(11, "sockstat", sockstat4) // no IPv6
	write(12, "sockstat", "RAW: inuse 0\n")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "13", "net"), 0o755)) // live, no counters
	fs, err := NewFS(root)
	require.NoError(t, err)

	c, err := fs.SocketsInUse(10)
	require.NoError(t, err)
	assert.Equal(t, SocketCounts{TCP: 7, TCP6: 3, UDP: 3, UDP6: 1}, c)
	c, err = fs.SocketsInUse(11)
	require.NoError(t, err)
	assert.Equal(t, SocketCounts{TCP: 7, UDP: 3}, c)
	_, err = fs.SocketsInUse(12)
	assert.ErrorIs(t, err, errBadSockstat)
	_, err = fs.SocketsInUse(13)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrProcessGone, "a live process without counters is an error, not gone")
	_, err = fs.SocketsInUse(99)
	assert.ErrorIs(t, err, ErrProcessGone)
}

// The targeted reader agrees with prometheus/procfs on this machine's own counters.
func TestSocketsInUseMatchesProcfs(t *testing.T) {
	fs, err := NewFS("/proc")
	require.NoError(t, err)
	pid := os.Getpid()
	got, err := fs.SocketsInUse(pid)
	require.NoError(t, err)
	pfs, err := procfs.NewFS("/proc/" + strconv.Itoa(pid))
	require.NoError(t, err)
	s4, err := pfs.NetSockstat()
	require.NoError(t, err)
	for _, p := range s4.Protocols {
		switch p.Protocol {
		case "TCP":
			assert.Equal(t, p.InUse, got.TCP)
		case "UDP":
			assert.Equal(t, p.InUse, got.UDP)
		}
	}
}

func FuzzParseInUse(f *testing.F) {
	f.Add([]byte(sockstat4))
	f.Add([]byte(sockstat6))
	f.Add([]byte("TCP: inuse 99999999999999999999999\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c SocketCounts
		found := parseInUse(data, &c)
		if c.TCP < 0 || c.TCP6 < 0 || c.UDP < 0 || c.UDP6 < 0 {
			t.Fatalf("negative count %+v", c)
		}
		if !found && (c.TCP != 0 || c.TCP6 != 0) {
			t.Fatalf("TCP counts set without a TCP line found: %+v", c)
		}
	})
}
