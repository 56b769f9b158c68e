package netns

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const h64 = "a678b512a678b512a678b512a678b512a678b512a678b512a678b512a678b512"

// Every form of ISTIO-FACTS §4 (taken from kubelet/cAdvisor, CRI-O, kind and Istio's own
// cni/pkg/nodeagent/podcgroupns_test.go cases as documented there) must map to its UID.
func TestPodUIDInCgroupLine(t *testing.T) {
	cases := []struct {
		name, line, uid string
	}{
		{"v1 cgroupfs burstable", "11:hugetlb:/kubepods/burstable/podd488cae9-b2a0-11e7-9350-020968147796/34a2062fd26c805aa8cf814cdfe479322b791f80afb9ea4db02d50375df14b41", "d488cae9-b2a0-11e7-9350-020968147796"},
		{"bare path guaranteed", "/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/9bca8d63" + h64[8:], "2c48913c-b29f-11e7-9350-020968147796"},
		{"bare path underscores", "/kubepods/pod2c48913c_b29f_11e7_9350_020968147796/9bca8d63" + h64[8:], "2c48913c-b29f-11e7-9350-020968147796"},
		{"v1 systemd docker", "1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c-b29f-11e7-9350-020968147796.slice/docker-" + h64 + ".scope", "2c48913c-b29f-11e7-9350-020968147796"},
		{"v1 systemd crio", "1:systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda2830d0d_b0f0_4ff0_81b5_0ee4e299cf80.slice/crio-" + h64 + ".scope", "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"},
		{"v2 systemd containerd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod70565f42_b704_42f2_83fe_1ffb77a67800.slice/cri-containerd-" + h64 + ".scope", "70565f42-b704-42f2-83fe-1ffb77a67800"},
		{"v2 cgroupfs besteffort", "0::/kubepods/besteffort/podd0544205-72df-11e8-b691-080027c5d95e/84ad0790" + h64[8:], "d0544205-72df-11e8-b691-080027c5d95e"},
		{"kind nesting v2", "0::/system.slice/docker-" + h64 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod863b91d4_4b68_4efa_917f_4b560e3e86aa.slice/cri-containerd-" + h64 + ".scope", "863b91d4-4b68-4efa-917f-4b560e3e86aa"},
		{"kind nesting v1 docker", "13:name=systemd:/docker/9352952" + h64[7:] + "/kubepods/besteffort/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/09bc3d7a" + h64[8:], "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"},
		{"private cgroupns relative", "/../../pod2c48913c-b29f-11e7-9350-020968147796/9bca8d63" + h64[8:], "2c48913c-b29f-11e7-9350-020968147796"},
		{"crun leaf on v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod70565f42_b704_42f2_83fe_1ffb77a67800.slice/crio-" + h64 + ".scope/container", "70565f42-b704-42f2-83fe-1ffb77a67800"},
		{"no separators", "0::/kubepods/pod70565f42b70442f283fe1ffb77a67800/x", "70565f42-b704-42f2-83fe-1ffb77a67800"},
		{"upper case hex", "0::/kubepods/pod70565F42-B704-42F2-83FE-1FFB77A67800/x", "70565f42-b704-42f2-83fe-1ffb77a67800"},
		{"pod slice without container", "0::/kubepods.slice/kubepods-pod70565f42_b704_42f2_83fe_1ffb77a67800.slice", "70565f42-b704-42f2-83fe-1ffb77a67800"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			uid, ok := PodUIDInCgroupLine(c.line)
			require.True(t, ok, "no UID found in %q", c.line)
			assert.Equal(t, c.uid, uid)
		})
	}
}

func TestPodUIDInCgroupLineRejects(t *testing.T) {
	for _, line := range []string{
		"0::/system.slice/crio-conmon-" + h64 + ".scope", // CRI-O monitor
		"0::/init.scope",
		"0::/kubepods.slice/kubepods-burstable.slice",
		"0::/kubepods/burstable/pod1234",                                    // truncated UID
		"0::/kubepods/burstable/podd488cae9-b2a0-11e7-9350-0209681477961/x", // 13 hex in the last group
		"0::/kubepods/burstable/podd488cae9-b2a0-11e7-9350-02096814779g/x",  // non-hex
		"0::/kubepods/burstable/podd488cae9--b2a0-11e7-9350-020968147796/x", // double separator
		"",
	} {
		_, ok := PodUIDInCgroupLine(line)
		assert.False(t, ok, "%q", line)
	}
}

func TestPodUIDFromCgroup(t *testing.T) {
	hybrid := "12:pids:/\n11:memory:/\n1:name=systemd:/\n0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda2830d0d_b0f0_4ff0_81b5_0ee4e299cf80.slice/cri-containerd-" + h64 + ".scope\n"
	crioV1 := "11:memory:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-" + h64 + "\n1:name=systemd:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-" + h64 + "\n0::/system.slice/crio.service\n"
	for name, in := range map[string]string{"hybrid: only 0::": hybrid, "crio v1: only v1 lines": crioV1} {
		uid, err := PodUIDFromCgroup(strings.NewReader(in))
		require.NoError(t, err, name)
		assert.Equal(t, "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80", uid, name)
	}
	uid, err := PodUIDFromCgroup(strings.NewReader("0::/system.slice/crio-conmon-" + h64 + ".scope\n"))
	require.NoError(t, err)
	assert.Empty(t, uid)

	// Same pod spelled two ways is not ambiguous; two pods are.
	same := "1:name=systemd:/kubepods/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/x\n0::/kubepods.slice/kubepods-poda2830d0d_b0f0_4ff0_81b5_0ee4e299cf80.slice/y\n"
	uid, err = PodUIDFromCgroup(strings.NewReader(same))
	require.NoError(t, err)
	assert.Equal(t, "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80", uid)
	two := "1:name=systemd:/kubepods/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/x\n0::/kubepods/pod70565f42-b704-42f2-83fe-1ffb77a67800/y\n"
	_, err = PodUIDFromCgroup(strings.NewReader(two))
	assert.True(t, errors.Is(err, ErrAmbiguousCgroup), "got %v", err)

	// The buffer variant agrees.
	u, ok, err := podUIDFromCgroupBytes([]byte(two))
	assert.False(t, ok)
	assert.ErrorIs(t, err, ErrAmbiguousCgroup)
	u, ok, err = podUIDFromCgroupBytes([]byte(crioV1))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80", string(u[:]))
}

func FuzzPodUIDFromCgroup(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod70565f42_b704_42f2_83fe_1ffb77a67800.slice/cri-containerd-" + h64 + ".scope\n")
	f.Add("1:name=systemd:/kubepods/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/x\n0::/kubepods/pod70565f42-b704-42f2-83fe-1ffb77a67800/y\n")
	f.Add("/../../pod2c48913c-b29f-11e7-9350-020968147796/9bca\npodpodpod")
	f.Fuzz(func(t *testing.T, in string) {
		uid, err := PodUIDFromCgroup(strings.NewReader(in))
		b, ok, berr := podUIDFromCgroupBytes([]byte(in))
		if (err == nil) != (berr == nil) {
			// The scanner variant fails on lines over 1 MiB; the buffer variant does not.
			if len(in) < 1<<20 {
				t.Fatalf("reader err %v, bytes err %v", err, berr)
			}
			return
		}
		if err != nil {
			return
		}
		if ok != (uid != "") || (ok && string(b[:]) != uid) {
			t.Fatalf("reader %q, bytes %q/%v", uid, b[:], ok)
		}
		if uid == "" {
			return
		}
		if len(uid) != 36 || strings.Count(uid, "-") != 4 || strings.ToLower(uid) != uid {
			t.Fatalf("non-canonical UID %q", uid)
		}
		// A found UID must be findable again in canonical form.
		if again, ok := PodUIDInCgroupLine("0::/kubepods/pod" + uid + "/x"); !ok || again != uid {
			t.Fatalf("canonical %q not re-parsed (%q)", uid, again)
		}
	})
}
