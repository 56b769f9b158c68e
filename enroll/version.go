package enroll

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version is an Istio version; the zero Version means "newest known behaviour".
// Pre-release and build suffixes are dropped: 1.25.0-beta.1 behaves as 1.25.0.
type Version struct{ Major, Minor, Patch int }

// ErrBadVersion is wrapped by every ParseVersion error.
var ErrBadVersion = errors.New("not an Istio version")

// maxVersionDigits bounds each numeric component so that parsing cannot overflow.
const maxVersionDigits = 6

// ParseVersion reads an Istio version: "1.24.3", "v1.24.3", "1.24" (patch 0), an image tag
// such as "1.24.3-distroless" or "1.25.0-beta.1", or a whole image reference
// ("docker.io/istio/install-cni:1.24.3-distroless", the tag after the last ':').
// "latest" and "master" mean the newest behaviour and give the zero Version.
func ParseVersion(s string) (Version, error) {
	in := s
	s = strings.TrimSpace(s)
	if strings.ContainsRune(s, '@') {
		return Version{}, fmt.Errorf("version %q: image digests carry no version: %w", in, ErrBadVersion)
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[i+1:]
	}
	switch strings.ToLower(s) {
	case "latest", "master":
		return Version{}, nil
	}
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		s = s[1:]
	}
	core, suffix := s, ""
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		core, suffix = s[:i], s[i+1:]
		if suffix == "" || !validSuffix(suffix) {
			return Version{}, fmt.Errorf("version %q: bad suffix %q: %w", in, suffix, ErrBadVersion)
		}
	}
	parts := strings.Split(core, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, fmt.Errorf("version %q: want MAJOR.MINOR[.PATCH]: %w", in, ErrBadVersion)
	}
	var nums [3]int
	for i, p := range parts {
		n, err := versionNumber(p)
		if err != nil {
			return Version{}, fmt.Errorf("version %q: component %q: %w: %w", in, p, err, ErrBadVersion)
		}
		nums[i] = n
	}
	if nums[0] < 1 {
		return Version{}, fmt.Errorf("version %q: major version 0 is not an Istio release: %w", in, ErrBadVersion)
	}
	return Version{Major: nums[0], Minor: nums[1], Patch: nums[2]}, nil
}

func versionNumber(p string) (int, error) {
	switch {
	case p == "":
		return 0, errors.New("empty")
	case len(p) > maxVersionDigits:
		return 0, errors.New("too long")
	case len(p) > 1 && p[0] == '0':
		return 0, errors.New("leading zero")
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, errors.New("not a number")
		}
	}
	return strconv.Atoi(p)
}

func validSuffix(s string) bool {
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '-', c == '_', c == '+':
		default:
			return false
		}
	}
	return true
}

// IsZero reports whether v is the zero Version ("newest known behaviour").
func (v Version) IsZero() bool { return v == Version{} }

// String renders v as MAJOR.MINOR.PATCH; the zero Version renders as "latest", which
// ParseVersion reads back as the zero Version.
func (v Version) String() string {
	if v.IsZero() {
		return "latest"
	}
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// AtLeast reports whether v is major.minor.patch or newer. The zero Version stands for the
// newest behaviour and is at least every version.
func (v Version) AtLeast(major, minor, patch int) bool {
	if v.IsZero() {
		return true
	}
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}
