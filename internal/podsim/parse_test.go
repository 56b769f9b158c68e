package podsim

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCgroupMounts(t *testing.T) {
	tests := []struct {
		file string
		want []hierarchy
	}{
		{"mountinfo-hybrid", []hierarchy{
			{Mountpoint: "/sys/fs/cgroup/cpu", Root: "/", Controllers: []string{"cpu"}},
			{Mountpoint: "/sys/fs/cgroup/cpuacct", Root: "/", Controllers: []string{"cpuacct"}},
			{Mountpoint: "/sys/fs/cgroup/cpuset", Root: "/", Controllers: []string{"cpuset"}},
			{Mountpoint: "/sys/fs/cgroup/memory", Root: "/", Controllers: []string{"memory"}},
			{Mountpoint: "/sys/fs/cgroup/devices", Root: "/", Controllers: []string{"devices"}},
			{Mountpoint: "/sys/fs/cgroup/freezer", Root: "/", Controllers: []string{"freezer"}},
			{Mountpoint: "/sys/fs/cgroup/blkio", Root: "/", Controllers: []string{"blkio"}},
			{Mountpoint: "/sys/fs/cgroup/pids", Root: "/", Controllers: []string{"pids"}},
			{Mountpoint: "/sys/fs/cgroup/systemd", Root: "/", Controllers: []string{"name=systemd"}},
			{Mountpoint: "/sys/fs/cgroup/unified", Root: "/", V2: true},
		}},
		{"mountinfo-v2", []hierarchy{
			{Mountpoint: "/sys/fs/cgroup", Root: "/", V2: true},
		}},
		{"mountinfo-v1-container", []hierarchy{
			// name=systemd is mounted read-only: skipped. cpu,cpuacct mounted twice: first wins.
			{Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", Root: "/docker/9352952a", Controllers: []string{"cpu", "cpuacct"}},
			{Mountpoint: "/sys/fs/cgroup/net_cls,net_prio", Root: "/docker/9352952a", Controllers: []string{"net_cls", "net_prio"}},
			{Mountpoint: "/sys/fs/cgroup/cpuset", Root: "/docker/9352952a", Controllers: []string{"cpuset"}},
			{Mountpoint: "/sys/fs/cgroup/odd dir", Root: "/", Controllers: []string{"pids"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tt.file))
			require.NoError(t, err)
			defer f.Close()
			got, err := parseCgroupMounts(f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestHierarchyLabelAndLinePath(t *testing.T) {
	h := hierarchy{Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", Root: "/docker/abc", Controllers: []string{"cpu", "cpuacct"}}
	assert.Equal(t, "cpu,cpuacct", h.Label())
	assert.Equal(t, "/docker/abc/meshmedic-sim-1-aa/kubepods", h.cgroupLinePath("meshmedic-sim-1-aa/kubepods"))
	assert.Equal(t, "/sys/fs/cgroup/cpu,cpuacct/meshmedic-sim-1-aa/kubepods", h.dir("meshmedic-sim-1-aa/kubepods"))
	v2 := hierarchy{Mountpoint: "/sys/fs/cgroup", Root: "/", V2: true}
	assert.Equal(t, "", v2.Label())
	assert.Equal(t, "/x/y", v2.cgroupLinePath("x/y"))
}

func TestParseNetnsLink(t *testing.T) {
	ino, err := parseNetnsLink("net:[4026531833]")
	require.NoError(t, err)
	assert.Equal(t, uint64(4026531833), ino)
	for _, bad := range []string{"", "net:[]", "net:[0]", "mnt:[4026531833]", "net:[12", "net:[-1]", "net:[4026531833]x", "net:[1 2]"} {
		_, err := parseNetnsLink(bad)
		assert.Error(t, err, bad)
	}
}

const sockstat6 = "TCP6: inuse 3\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n"
const sockstat = "sockets: used 291\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1\nUDP: inuse 2 mem 4\n"

func TestParseSockstatInUse(t *testing.T) {
	for _, tt := range []struct {
		in, proto string
		want      int
	}{
		{sockstat6, "TCP6", 3},
		{sockstat6, "UDP6", 1},
		{sockstat6, "FRAG6", 0},
		{sockstat, "TCP", 5},
		{sockstat, "UDP", 2},
	} {
		got, err := parseSockstatInUse(strings.NewReader(tt.in), tt.proto)
		require.NoError(t, err, tt.proto)
		assert.Equal(t, tt.want, got, tt.proto)
	}
	_, err := parseSockstatInUse(strings.NewReader(sockstat), "TCP6")
	assert.True(t, errors.Is(err, errNotFound), "missing line: %v", err)
	_, err = parseSockstatInUse(strings.NewReader("TCP6: orphan 1\n"), "TCP6")
	assert.True(t, errors.Is(err, errNotFound), "missing inuse: %v", err)
	_, err = parseSockstatInUse(strings.NewReader("TCP6: inuse x\n"), "TCP6")
	assert.Error(t, err)
	_, err = parseSockstatInUse(strings.NewReader("TCP6: inuse -4\n"), "TCP6")
	assert.Error(t, err)
}

// A real /proc/<pid>/stat line, and one whose command name holds ") (" and spaces.
const statLine = "30145 (cat) R 30129 30129 3622 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 180131 3133440 360 18446744073709551615 93866370314240 0\n"
const statTricky = "7 (a) b (c d) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 1 1\n"

func TestParseStatStartTime(t *testing.T) {
	v, err := parseStatStartTime([]byte(statLine))
	require.NoError(t, err)
	assert.Equal(t, uint64(180131), v)
	v, err = parseStatStartTime([]byte(statTricky))
	require.NoError(t, err)
	assert.Equal(t, uint64(99), v)
	for _, bad := range []string{"", "1 (x) R 1 2 3", "1 x R", "1 (x) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 z"} {
		_, err := parseStatStartTime([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func TestParseUptimeTicks(t *testing.T) {
	for in, want := range map[string]uint64{
		"1801.34 2015.84\n": 180134,
		"5.5 1.0":           550,
		"7 1":               700,
		"0.01 0":            1,
		"12.345 0":          1234, // a third decimal is truncated, like the kernel's tick count
	} {
		got, err := parseUptimeTicks([]byte(in))
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "x", "1.x2 3", "-1.00 0", "184467440737095516.00 0"} {
		_, err := parseUptimeTicks([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func FuzzParseCgroupMounts(f *testing.F) {
	for _, name := range []string{"mountinfo-hybrid", "mountinfo-v2", "mountinfo-v1-container"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("1 2 0:1 / /a\\ rw - cgroup x rw,\n1 2 3 4 5 - cgroup2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := parseCgroupMounts(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, h := range hs {
			if h.V2 != (len(h.Controllers) == 0) {
				t.Fatalf("hierarchy %+v: v2 iff no controllers", h)
			}
			for _, c := range h.Controllers {
				if c == "" || c == "rw" || c == "ro" {
					t.Fatalf("hierarchy %+v: bad controller %q", h, c)
				}
			}
		}
	})
}

func FuzzParseNetnsLink(f *testing.F) {
	f.Add("net:[4026531833]")
	f.Add("net:[]")
	f.Add("mnt:[1]")
	f.Fuzz(func(t *testing.T, s string) {
		ino, err := parseNetnsLink(s)
		if err == nil && ino == 0 {
			t.Fatalf("%q: inode 0 without error", s)
		}
	})
}

func FuzzParseSockstatInUse(f *testing.F) {
	f.Add([]byte(sockstat6), "TCP6")
	f.Add([]byte(sockstat), "TCP")
	f.Add([]byte("TCP6: inuse\n"), "TCP6")
	f.Fuzz(func(t *testing.T, b []byte, proto string) {
		n, err := parseSockstatInUse(bytes.NewReader(b), proto)
		if err == nil && n < 0 {
			t.Fatalf("negative count %d", n)
		}
	})
}

func FuzzParseStatStartTime(f *testing.F) {
	f.Add([]byte(statLine))
	f.Add([]byte(statTricky))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStatStartTime(b)
	})
}

func FuzzParseUptimeTicks(f *testing.F) {
	f.Add([]byte("1801.34 2015.84\n"))
	f.Add([]byte("7"))
	f.Add([]byte(".5"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseUptimeTicks(b)
		if err != nil {
			return
		}
		// The whole seconds must come back out of the tick count.
		sec, _, _ := strings.Cut(string(bytes.Fields(b)[0]), ".")
		if sec != "" && v/userHZ != mustUint(t, sec) {
			t.Fatalf("%q: %d ticks", b, v)
		}
	})
}

func mustUint(t *testing.T, s string) uint64 {
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("parser accepted %q", s)
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}
