package podsim

import (
	"net/netip"
	"path"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testUID = "2c48913c-b29f-11e7-9350-020968147796"
	testID  = "9bca8d63d3c0d1e5b7b2d2a8c5a1f0e4d3c2b1a09f8e7d6c5b4a39281706f5e4"
)

// The shapes of ISTIO-FACTS.md §4, below the sim's own parent cgroup.
func TestCgroupLayout(t *testing.T) {
	tests := []struct {
		driver CgroupDriver
		rt     Runtime
		qos    string
		want   string
	}{
		{DriverSystemd, RuntimeContainerd, "burstable", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + testID + ".scope"},
		{DriverSystemd, RuntimeCRIO, "besteffort", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/crio-" + testID + ".scope"},
		{DriverSystemd, RuntimeDocker, "guaranteed", "kubepods.slice/kubepods-pod2c48913c_b29f_11e7_9350_020968147796.slice/docker-" + testID + ".scope"},
		{DriverCgroupfs, RuntimeContainerd, "burstable", "kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/" + testID},
		{DriverCgroupfs, RuntimeDocker, "besteffort", "kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020968147796/" + testID},
		{DriverCgroupfs, RuntimeCRIO, "guaranteed", "kubepods/pod2c48913c-b29f-11e7-9350-020968147796/crio-" + testID},
	}
	for _, tt := range tests {
		parts := podCgroupParts(tt.driver, tt.qos, testUID)
		got := path.Join(path.Join(parts...), containerCgroup(tt.driver, tt.rt, testID))
		assert.Equal(t, tt.want, got, "%s/%s/%s", tt.driver, tt.rt, tt.qos)
	}
}

func TestNormalise(t *testing.T) {
	got, err := normalise(PodSpec{})
	require.NoError(t, err)
	assert.True(t, validUID(got.UID), got.UID)
	assert.Equal(t, "burstable", got.QoS)
	assert.Equal(t, DriverSystemd, got.Driver)
	assert.Equal(t, RuntimeContainerd, got.Runtime)

	got, err = normalise(PodSpec{UID: testUID, QoS: "BestEffort", Driver: DriverCgroupfs, Runtime: RuntimeCRIO})
	require.NoError(t, err)
	assert.Equal(t, PodSpec{UID: testUID, QoS: "besteffort", Driver: DriverCgroupfs, Runtime: RuntimeCRIO}, got)

	for name, bad := range map[string]PodSpec{
		"upper-case uid":  {UID: "2C48913C-B29F-11E7-9350-020968147796"},
		"underscore uid":  {UID: "2c48913c_b29f_11e7_9350_020968147796"},
		"short uid":       {UID: "2c48913c"},
		"qos":             {QoS: "platinum"},
		"driver":          {Driver: "cgroupv3"},
		"runtime":         {Runtime: "rkt"},
		"hostnet with ip": {HostNetwork: true, IPv4: netip.MustParseAddr("10.0.0.1")},
		"hostnet no lo6":  {HostNetwork: true, NoIPv6Lo: true},
	} {
		_, err := normalise(bad)
		assert.Error(t, err, name)
	}
}

func TestNewUIDIsV4(t *testing.T) {
	for i := 0; i < 100; i++ {
		u := newUID()
		require.True(t, validUID(u), u)
		assert.Equal(t, byte('4'), u[14], u)
		assert.Contains(t, "89ab", string(u[19]), u)
	}
}

func TestOwnerAlive(t *testing.T) {
	assert.True(t, ownerAlive(simPrefix+"1-abcd"), "pid 1 is alive")
	assert.False(t, ownerAlive(simPrefix+"999999999-abcd"), "beyond pid_max")
	assert.False(t, ownerAlive(simPrefix+"ab12"), "no pid: no owner")
	assert.False(t, ownerAlive(simPrefix+"0-ab12"))
}
