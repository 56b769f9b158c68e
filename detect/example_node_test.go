package detect_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/detect/detecttest"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
	"github.com/meshmedic/meshmedic/netns/netnstest"
)

// Classify is DESIGN.md's table of finding classes as a pure function: what enroll expects
// first, then whether the netns could be read at all, then what it shows.
func ExampleClassify() {
	selected := enroll.Expectation{State: enroll.Captured, Reason: enroll.ReasonSelected, Required: netns.CorePorts}
	for _, ev := range []detect.Evidence{
		{Expectation: selected, Redirection: "enabled", Capture: netns.Captured},
		{Expectation: selected, Redirection: "enabled", Capture: netns.CaptureNone},
		{Expectation: selected, Redirection: "enabled", Capture: netns.CapturePartial},
		{Expectation: selected, Redirection: "enabled", Capture: netns.CaptureNone, NetnsChanged: true},
		{Expectation: selected, Capture: netns.CaptureNone, Unenrolled: 5 * time.Second, Grace: 30 * time.Second},
		{Expectation: selected, Capture: netns.CaptureNone, Unenrolled: 10 * time.Minute, Grace: 30 * time.Second},
		{Expectation: selected, Redirection: "enabled", Capture: netns.CaptureUnknown},
		{Expectation: enroll.Expectation{State: enroll.NotCaptured, Reason: enroll.ReasonHostNetwork}},
	} {
		c := detect.Classify(ev)
		fmt.Printf("%-14s actionable=%v\n", c, c.Actionable())
	}
	// Output:
	// captured       actionable=false
	// orphaned       actionable=true
	// partial        actionable=true
	// netns-replaced actionable=true
	// unknown        actionable=false
	// not-enrolled   actionable=true
	// unknown        actionable=false
	// skipped        actionable=false
}

// writeProc writes one process of a proc tree: the files netns reads (an Example has no
// *testing.T for netnstest.Tree).
func writeProc(root string, pid int, cgroup string, start, ino uint64, tcp6 string) {
	dir := filepath.Join(root, strconv.Itoa(pid))
	for name, content := range map[string]string{"cgroup": cgroup, "stat": netnstest.Stat(pid, "pause", start), "net/tcp6": tcp6} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			panic(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		panic(err)
	}
	if err := os.Symlink(fmt.Sprintf("net:[%d]", ino), filepath.Join(dir, "ns", "net")); err != nil {
		panic(err)
	}
}

func ambientPod(name, uid string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid),
			Annotations: map[string]string{enroll.AnnotationRedirection: "enabled"}},
		Spec:   corev1.PodSpec{NodeName: "node-a"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.9", PodIPs: []corev1.PodIP{{IP: "10.244.0.9"}}},
	}
}

// What the agent does on its node: the NodeLocalProber finds each pod's sandbox process by
// the pod UID in cgroup paths under a proc root (here a test tree; /host/proc in the
// DaemonSet) and reads its netns's listeners, with no exec and no capabilities.
func ExampleNewNodeLocalProber() {
	root, err := os.MkdirTemp("", "proc")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	const cartUID, webUID = "6b3f2a10-0000-4000-8000-00000000ca27", "6b3f2a10-0000-4000-8000-0000000000eb"
	writeProc(root, 1, "0::/init.scope\n", 1, netnstest.HostNetns, netnstest.TCP6())
	writeProc(root, 300, netnstest.KubepodsCgroup(cartUID), 300, 4026532401, netnstest.TCP6(netnstest.Ztunnel(true, 100)...))
	writeProc(root, 400, netnstest.KubepodsCgroup(webUID), 400, 4026532402, netnstest.TCP6(netnstest.Listen("[::]:8080", 200)))

	fs, err := netns.NewFS(root)
	if err != nil {
		panic(err)
	}
	prober := detect.NewNodeLocalProber(fs, netns.NewProcReader(fs))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient}}}
	cluster := detecttest.NewCluster([]*corev1.Namespace{ns}, ambientPod("cart", cartUID), ambientPod("web", webUID))

	rep, err := detect.New(cluster, cluster, prober, detect.WithNode("node-a")).Scan(context.Background(), "shop")
	if err != nil {
		panic(err)
	}
	for _, f := range rep.Findings {
		fmt.Println(f.Key(), f.Class, "present", f.Present, "netns", f.Netns, "via", f.Source)
	}
	// Output:
	// shop/cart captured present [15001 15006 15008 15053] netns 4026532401 via node
	// shop/web orphaned present [] netns 4026532402 via node
}

// Confirm is the flap guard: it waits the confirm delay on the Engine's clock (a fake one
// here, stepped by hand), probes the findings again and keeps only those that hold.
func ExampleEngine_Confirm() {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient}}}
	cluster := detecttest.NewCluster([]*corev1.Namespace{ns}, ambientPod("flappy", "u1"), ambientPod("stuck", "u2"))
	prober := detecttest.NewProber()
	prober.Set("shop/flappy", detecttest.Orphaned())
	prober.Set("shop/stuck", detecttest.Orphaned())
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	engine := detect.New(cluster, cluster, prober, detect.WithClock(clk), detect.WithConfirmDelay(10*time.Second))

	rep, err := engine.Scan(context.Background(), "shop")
	if err != nil {
		panic(err)
	}
	fmt.Println("scan:", len(rep.Actionable()), "actionable")

	prober.Set("shop/flappy", detecttest.Captured()) // istio-cni caught up in the meantime
	go func() {
		for !clk.HasWaiters() { // Confirm is waiting for the delay
			time.Sleep(time.Millisecond)
		}
		clk.Step(10 * time.Second)
	}()
	rep, err = engine.Confirm(context.Background(), rep)
	if err != nil {
		panic(err)
	}
	for _, f := range rep.Findings {
		fmt.Printf("%s %s confirmed=%v confirmations=%d\n", f.Key(), f.Class, f.Confirmed, f.Confirmations)
	}
	// Output:
	// scan: 2 actionable
	// shop/flappy captured confirmed=false confirmations=0
	// shop/stuck orphaned confirmed=true confirmations=2
}
