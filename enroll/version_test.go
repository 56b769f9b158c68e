package enroll

import (
	"errors"
	"testing"
)

func TestParseVersion(t *testing.T) {
	good := []struct {
		in   string
		want Version
	}{
		{"1.24.3", Version{1, 24, 3}},
		{"v1.24.3", Version{1, 24, 3}},
		{"V1.24.3", Version{1, 24, 3}},
		{"1.24", Version{1, 24, 0}},
		{"v1.24", Version{1, 24, 0}},
		{"1.24.3-distroless", Version{1, 24, 3}},
		{"1.24.3-debug", Version{1, 24, 3}},
		{"1.25.0-beta.1", Version{1, 25, 0}},
		{"1.26-alpha.0123abc", Version{1, 26, 0}},
		{"1.22.0+build.5", Version{1, 22, 0}},
		{" 1.30.4 ", Version{1, 30, 4}},
		{"1.0.0", Version{1, 0, 0}},
		{"2.1.0", Version{2, 1, 0}},
		{"docker.io/istio/install-cni:1.24.3-distroless", Version{1, 24, 3}},
		{"gcr.io:443/istio-release/install-cni:v1.27.1", Version{1, 27, 1}},
		{"latest", Version{}},
		{"LATEST", Version{}},
		{"master", Version{}},
		{"istio/install-cni:latest", Version{}},
	}
	for _, tc := range good {
		got, err := ParseVersion(tc.in)
		if err != nil {
			t.Errorf("ParseVersion(%q): unexpected error %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseVersion(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}

	bad := []string{
		"", " ", "1", "v", "v1", "1.", "1..2", ".1.2", "1.2.", "1.2.3.4", "a.b.c", "1.2.x",
		"0.9.1", "0.0", "01.2.3", "1.02.3", "1.2.03", "-1.2.3", "1.-2.3", "1.2.3-", "1.2-",
		"1.2.3-beta!1", "1.2.3 beta", "1234567.1.1", "1.1234567", "istio/install-cni",
		"istio/install-cni@sha256:0123abcd", "1.24.3@sha256:00", "registry:5000/istio/install-cni",
		"１.２.３", "1.2.3\x00", "nightly",
	}
	for _, in := range bad {
		got, err := ParseVersion(in)
		if err == nil {
			t.Errorf("ParseVersion(%q) = %v, want an error", in, got)
			continue
		}
		if !errors.Is(err, ErrBadVersion) {
			t.Errorf("ParseVersion(%q) error %v does not wrap ErrBadVersion", in, err)
		}
	}
}

func TestVersionString(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		want string
	}{
		{Version{1, 24, 3}, "1.24.3"},
		{Version{1, 30, 0}, "1.30.0"},
		{Version{}, "latest"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.v, got, tc.want)
		}
		back, err := ParseVersion(tc.v.String())
		if err != nil || back != tc.v {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tc.v.String(), back, err, tc.v)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v                   Version
		major, minor, patch int
		want                bool
	}{
		{Version{1, 22, 2}, 1, 22, 2, true},
		{Version{1, 22, 1}, 1, 22, 2, false},
		{Version{1, 22, 3}, 1, 22, 2, true},
		{Version{1, 23, 0}, 1, 22, 2, true},
		{Version{1, 21, 9}, 1, 22, 0, false},
		{Version{2, 0, 0}, 1, 30, 4, true},
		{Version{1, 99, 0}, 2, 0, 0, false},
		{Version{}, 1, 30, 4, true},
		{Version{}, 99, 0, 0, true},
	} {
		if got := tc.v.AtLeast(tc.major, tc.minor, tc.patch); got != tc.want {
			t.Errorf("%v.AtLeast(%d, %d, %d) = %v, want %v", tc.v, tc.major, tc.minor, tc.patch, got, tc.want)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.24.3", "v1.24", "1.25.0-beta.1", "1.24.3-distroless", "latest",
		"docker.io/istio/install-cni:1.24.3", "0.1", "1.2.3.4", "01.2", "1.2-", "@", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			if v != (Version{}) {
				t.Fatalf("ParseVersion(%q) returned %v with error %v", s, v, err)
			}
			if !errors.Is(err, ErrBadVersion) {
				t.Fatalf("ParseVersion(%q) error %v does not wrap ErrBadVersion", s, err)
			}
			return
		}
		if !v.IsZero() && v.Major < 1 {
			t.Fatalf("ParseVersion(%q) = %v: major below 1", s, v)
		}
		if v.Major < 0 || v.Minor < 0 || v.Patch < 0 {
			t.Fatalf("ParseVersion(%q) = %v: negative component", s, v)
		}
		back, err := ParseVersion(v.String())
		if err != nil || back != v {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, v, v.String(), back, err)
		}
	})
}
