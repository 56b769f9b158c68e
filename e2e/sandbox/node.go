package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/internal/podsim"
)

// Options configure a simulated node.
type Options struct {
	NodeName string       // default "sandbox-node"
	PodCIDR  netip.Prefix // pod IPs are taken from here; default 10.244.0.0/16 (the simulated node does not reuse IPs: a long run of churn needs room)
	// DNS makes the ztunnel stand-in open 127.0.0.1:15053 too (DNS capture on).
	DNS bool
	// NoCapture disables the istio-cni/ztunnel stand-in: pods start un-enrolled.
	NoCapture bool
	// NoZtunnelPod skips creating the node's ztunnel and istio-cni pods (istio-system,
	// app=ztunnel and k8s-app=istio-cni-node), which heal's planner reads to know the
	// node's ztunnel and istio-cni are Ready.
	NoZtunnelPod bool
	Log          io.Writer // progress lines; nil = silent
	// RealCNI, when set, replaces the simulated istio-cni and ztunnel with the real istio-cni
	// and the ZDS stand-in, and pods get their network from a real CNI chain (realcni.go).
	// DNS and NoCapture do not apply then (istio-cni-config decides).
	RealCNI *RealCNIOptions
}

// Node is a simulated node. Its methods are safe for concurrent use.
type Node struct {
	opt    Options
	cs     kubernetes.Interface
	sim    *podsim.Sim
	cancel context.CancelFunc
	done   chan struct{}

	// captureOff: the istio-cni stand-in stops enrolling pods (a node whose CNI chain lost
	// istio-cni). Pods captured before keep their capture.
	captureOff atomic.Bool

	mu      sync.Mutex
	unready map[string]int32 // namespace/name → restart count: the kubelet reports it crash-looping
	pods    map[types.UID]*simPod
	nextIP  netip.Addr
	err     error // first background error
	nsLis   func(name string) (*corev1.Namespace, error)

	// Real-CNI mode only (nil otherwise).
	real *RealCNI
	// kubelet serialises the kubelet role's work on pods (the reconcile loop and the
	// sandbox operations tests call).
	kubelet  sync.Mutex
	queue    chan types.UID
	podStore cache.Store
}

type simPod struct {
	ns, name string
	uid      types.UID
	pod      *podsim.Pod
	ip       netip.Addr
	captured bool

	// Real-CNI mode: the sandbox's network from the CNI chain.
	net        *sandboxNetwork
	generation int // sandbox (re-)creations, for CNI container IDs
	addBackoff time.Duration
	holdStatus bool // the kubelet has not posted this sandbox's status yet
	dead       bool // KillSandbox: no sandbox until RecreateSandbox
}

// StartNode registers the node with the API server, starts watching pods bound to it and
// returns once its informers have synced. Stop undoes everything it created.
func StartNode(ctx context.Context, cs kubernetes.Interface, opt Options) (*Node, error) {
	if opt.NodeName == "" {
		opt.NodeName = "sandbox-node"
	}
	if !opt.PodCIDR.IsValid() {
		opt.PodCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	sim, err := podsim.New()
	if err != nil {
		return nil, err
	}
	n := &Node{opt: opt, cs: cs, sim: sim, pods: map[types.UID]*simPod{}, unready: map[string]int32{}, done: make(chan struct{}),
		nextIP: opt.PodCIDR.Addr().Next().Next()}
	if err := n.register(ctx); err != nil {
		return nil, errors.Join(err, sim.Close())
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opt.NodeName).String()
	}))
	nsFactory := informers.NewSharedInformerFactory(cs, 0)
	podInf := factory.Core().V1().Pods().Informer()
	nsLister := nsFactory.Core().V1().Namespaces().Lister()
	n.nsLis = nsLister.Get
	queue := make(chan types.UID, 4096)
	podStore := podInf.GetStore()
	n.queue, n.podStore = queue, podStore
	enqueue := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			select {
			case queue <- p.UID:
			default:
				n.fail(fmt.Errorf("sandbox node: work queue full"))
			}
		}
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, o any) { enqueue(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				if opt.RealCNI != nil {
					// The runtime's DEL must not race the kubelet's ADD: go through the queue.
					enqueue(p)
					return
				}
				n.teardown(p.UID)
			}
		},
	}); err != nil {
		cancel()
		return nil, errors.Join(err, sim.Close())
	}
	factory.Start(runCtx.Done())
	nsFactory.Start(runCtx.Done())
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			return nil, errors.Join(fmt.Errorf("sandbox node: pod informer did not sync"), sim.Close())
		}
	}
	nsFactory.WaitForCacheSync(ctx.Done())
	if opt.RealCNI != nil {
		// Before any pod is started: every pod sandbox then gets its network from the chain.
		real, err := startRealCNI(ctx, cs, opt.NodeName, *opt.RealCNI, n.logf)
		if err != nil {
			cancel()
			return nil, errors.Join(err, sim.Close())
		}
		n.real = real
		real.mu.Lock()
		real.onChange = n.requeueIstioPods
		real.mu.Unlock()
	}
	if !opt.NoZtunnelPod {
		if err := n.createInfraPods(ctx); err != nil {
			cancel()
			if n.real != nil {
				err = errors.Join(err, n.real.stop())
			}
			return nil, errors.Join(err, sim.Close())
		}
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); n.heartbeat(runCtx) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-runCtx.Done():
				return
			case uid := <-queue:
				n.reconcile(runCtx, podStore, uid)
			}
		}
	}()
	go func() { wg.Wait(); close(n.done) }()
	return n, nil
}

func (n *Node) logf(format string, a ...any) {
	if n.opt.Log != nil {
		fmt.Fprintf(n.opt.Log, "sandbox-node: "+format+"\n", a...)
	}
}

func (n *Node) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err == nil {
		n.err = err
	}
	n.logf("error: %v", err)
}

// Err returns the first error the node's background work hit, if any.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// Name is the node's name.
func (n *Node) Name() string { return n.opt.NodeName }

// Sim exposes the kernel-object simulator (for assertions in tests).
func (n *Node) Sim() *podsim.Sim { return n.sim }

func (n *Node) register(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.opt.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": n.opt.NodeName, "kubernetes.io/os": "linux", "meshmedic.io/sandbox": "true"}},
		Spec: corev1.NodeSpec{PodCIDR: n.opt.PodCIDR.String()},
	}
	created, err := n.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = n.cs.CoreV1().Nodes().Get(ctx, n.opt.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", n.opt.NodeName, err)
	}
	created.Status = n.nodeStatus()
	updated, err := n.cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("node %s status: %w", n.opt.NodeName, err)
	}
	// The TaintNodesByCondition admission plugin taints every new node not-ready; the
	// node-lifecycle controller, which would lift it once the node reports Ready, is off in
	// the sandbox (there is no real kubelet), so lift it here.
	// Another writer (the node controller's CIDR or a label) may update the Node meanwhile:
	// read it again and retry, as a kubelet would.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var keep []corev1.Taint
		for _, t := range updated.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(updated.Spec.Taints) {
			return nil
		}
		updated.Spec.Taints = keep
		_, err := n.cs.CoreV1().Nodes().Update(ctx, updated, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			if cur, gerr := n.cs.CoreV1().Nodes().Get(ctx, n.opt.NodeName, metav1.GetOptions{}); gerr == nil {
				updated = cur
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("node %s: lifting the not-ready taint: %w", n.opt.NodeName, err)
	}
	return n.renewLease(ctx)
}

func (n *Node) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	return corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "meshmedic sandbox node", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: n.opt.NodeName}},
		NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v1.37.2-sandbox", OperatingSystem: "linux", Architecture: "amd64"},
	}
}

func (n *Node) renewLease(ctx context.Context) error {
	leases := n.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, n.opt.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.opt.NodeName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(n.opt.NodeName), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeat keeps the node Ready in the eyes of the node lifecycle controller.
func (n *Node) heartbeat(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.renewLease(ctx); err != nil && ctx.Err() == nil {
				n.logf("lease renewal: %v", err) // the API server may be restarting: keep going
			}
		}
	}
}

// reconcile plays the kubelet, istio-cni and ztunnel for one pod (in real-CNI mode the kubelet
// only: the runtime's CNI calls are real, and istio-cni and the stand-in do the rest).
func (n *Node) reconcile(ctx context.Context, store cache.Store, uid types.UID) {
	n.kubelet.Lock()
	defer n.kubelet.Unlock()
	var pod *corev1.Pod
	for _, o := range store.List() {
		if p := o.(*corev1.Pod); p.UID == uid {
			pod = p.DeepCopy()
			break
		}
	}
	if pod == nil {
		n.teardown(uid)
		return
	}
	if pod.DeletionTimestamp != nil {
		n.teardown(uid)
		err := n.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
			n.logf("finishing deletion of %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return
	}
	sp, err := n.ensureStarted(pod)
	if err != nil {
		n.fail(fmt.Errorf("starting pod %s/%s: %w", pod.Namespace, pod.Name, err))
		return
	}
	if real := n.realCNI(); real != nil {
		n.mu.Lock()
		dead := sp.dead
		n.mu.Unlock()
		if dead {
			return // the test re-creates it (RecreateSandbox)
		}
		if !n.ensureNetwork(ctx, real, pod, sp) {
			return // retried after a back-off, as the kubelet retries RunPodSandbox
		}
	}
	if err := n.ensureStatus(ctx, pod, sp); err != nil && ctx.Err() == nil {
		n.logf("status of %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	if !n.opt.NoCapture && !n.captureOff.Load() && n.realCNI() == nil {
		if err := n.ensureCaptured(ctx, pod, sp); err != nil && ctx.Err() == nil {
			n.logf("capture of %s/%s: %v", pod.Namespace, pod.Name, err)
		}
	}
}

func (n *Node) ensureStarted(pod *corev1.Pod) (*simPod, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if sp, ok := n.pods[pod.UID]; ok {
		return sp, nil
	}
	spec := podsim.PodSpec{UID: string(pod.UID), HostNetwork: pod.Spec.HostNetwork}
	ip := netip.MustParseAddr("127.0.0.1")
	if n.real != nil && !pod.Spec.HostNetwork {
		ip = netip.Addr{} // from the CNI chain (ensureNetwork)
	} else if !pod.Spec.HostNetwork {
		ip = n.nextIP
		if !n.opt.PodCIDR.Contains(ip) {
			return nil, fmt.Errorf("pod CIDR %s exhausted", n.opt.PodCIDR)
		}
		n.nextIP = ip.Next()
		spec.IPv4 = ip
	}
	p, err := n.sim.AddPod(spec)
	if err != nil {
		return nil, err
	}
	sp := &simPod{ns: pod.Namespace, name: pod.Name, uid: pod.UID, pod: p, ip: ip}
	n.pods[pod.UID] = sp
	n.logf("started %s/%s uid=%s pid=%d ip=%s", pod.Namespace, pod.Name, pod.UID, p.PID, ip)
	return sp, nil
}

func (n *Node) teardown(uid types.UID) {
	n.mu.Lock()
	sp, ok := n.pods[uid]
	delete(n.pods, uid)
	n.mu.Unlock()
	if !ok {
		return
	}
	if real := n.realCNI(); real != nil {
		n.releaseNetwork(real, sp)
	}
	if err := n.sim.RemovePod(sp.pod); err != nil && !errors.Is(err, podsim.ErrRemoved) {
		n.fail(fmt.Errorf("removing pod %s/%s: %w", sp.ns, sp.name, err))
	}
	n.logf("removed %s/%s", sp.ns, sp.name)
}

// ensureStatus writes what a kubelet would: Running, the pod IP, container statuses, and
// Ready = containers ready AND every readiness gate's condition True.
func (n *Node) ensureStatus(ctx context.Context, pod *corev1.Pod, sp *simPod) error {
	n.mu.Lock()
	held := sp.holdStatus
	n.mu.Unlock()
	if held {
		return nil
	}
	want := pod.Status.DeepCopy()
	now := metav1.Now()
	if want.Phase != corev1.PodRunning {
		want.Phase = corev1.PodRunning
		want.StartTime = &now
	}
	want.HostIP = "127.0.0.1"
	want.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	want.PodIP = sp.ip.String()
	want.PodIPs = []corev1.PodIP{{IP: sp.ip.String()}}
	if len(want.ContainerStatuses) != len(pod.Spec.Containers) {
		want.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			want.ContainerStatuses = append(want.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: "sandbox://" + c.Image, Ready: true, Started: ptr.To(true),
				ContainerID: "containerd://" + sp.pod.SandboxID,
				State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
	}
	n.mu.Lock()
	restarts, crashing := n.unready[pod.Namespace+"/"+pod.Name]
	n.mu.Unlock()
	containersReady := !crashing
	if real := n.realCNI(); real != nil {
		// The agent's and ztunnel's pods are as ready as their processes.
		if ready, r, ok := real.podState(ctx, pod); ok {
			containersReady, restarts, crashing = ready, r, true
		}
	}
	for i := range want.ContainerStatuses {
		want.ContainerStatuses[i].Ready = containersReady
		if crashing {
			want.ContainerStatuses[i].RestartCount = restarts
		}
	}
	gatesOK := containersReady
	for _, g := range pod.Spec.ReadinessGates {
		c := findCondition(want.Conditions, g.ConditionType)
		if c == nil || c.Status != corev1.ConditionTrue {
			gatesOK = false
		}
	}
	setCondition(want, corev1.PodScheduled, true, now)
	setCondition(want, corev1.PodInitialized, true, now)
	setCondition(want, corev1.ContainersReady, containersReady, now)
	setCondition(want, corev1.PodReady, gatesOK, now)
	if statusEqual(&pod.Status, want) {
		return nil
	}
	pod.Status = *want
	_, err := n.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is queued, or it is gone
	}
	return err
}

func statusEqual(a, b *corev1.PodStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func findCondition(cs []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, now metav1.Time) {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	if c := findCondition(st.Conditions, t); c != nil {
		if c.Status != s {
			c.Status, c.LastTransitionTime = s, now
		}
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// ensureCaptured plays istio-cni + ztunnel: a pod enroll says should be captured gets
// istio-cni's in-pod routing rule and route, then ztunnel's in-pod listeners (istio-cni
// programs the netns, then hands it to ztunnel), then the "enabled" annotation, once; a
// captured pod that stops being selected (e.g. labelled istio.io/dataplane-mode=none) loses
// all three (listeners first, then rules), as istio-cni removes it from the mesh
// (cni/pkg/nodeagent/informers.go, reconcilePod), and gets them back when it is selected
// again.
func (n *Node) ensureCaptured(ctx context.Context, pod *corev1.Pod, sp *simPod) error {
	ns, _ := n.nsLis(pod.Namespace)
	if ns == nil {
		ns, _ = n.cs.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{})
	}
	want := enroll.Expect(pod, ns, enroll.DefaultSettings()).State == enroll.Captured
	n.mu.Lock()
	have := sp.captured
	n.mu.Unlock()
	annotated := pod.Annotations[enroll.AnnotationRedirection] == "enabled"
	switch {
	case want && !have:
		// Redirect is idempotent, so a retry after a failed Capture is safe.
		if err := n.sim.Redirect(sp.pod); err != nil {
			return err
		}
		if err := n.sim.Capture(sp.pod, n.opt.DNS); err != nil {
			return err
		}
		n.setCaptured(sp, true)
	case !want && have:
		if err := n.sim.Flush(sp.pod); err != nil {
			return err
		}
		if err := n.sim.Unredirect(sp.pod); err != nil {
			return err
		}
		n.setCaptured(sp, false)
	}
	var patch string
	switch {
	case want && !annotated:
		patch = `{"metadata":{"annotations":{"` + enroll.AnnotationRedirection + `":"enabled"}}}`
	case !want && annotated:
		patch = `{"metadata":{"annotations":{"` + enroll.AnnotationRedirection + `":null}}}`
	default:
		return nil
	}
	_, err := n.cs.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err == nil {
		n.logf("%s/%s: captured=%v", pod.Namespace, pod.Name, want)
	}
	return err
}

// SetCapturing turns the istio-cni stand-in's enrolment of pods on or off: off plays a
// node whose CNI chain no longer runs istio-cni (the reboot race), so pods created from
// then on are not enrolled; pods captured before stay captured.
func (n *Node) SetCapturing(on bool) { n.captureOff.Store(!on) }

// SetCrashLooping makes the simulated kubelet report the pod's containers not ready and
// restarting (or healthy again), as for a crash-looping istio-cni, and writes that status
// at once.
func (n *Node) SetCrashLooping(ctx context.Context, namespace, name string, crashing bool) error {
	n.mu.Lock()
	if crashing {
		n.unready[namespace+"/"+name]++
	} else {
		delete(n.unready, namespace+"/"+name)
	}
	n.mu.Unlock()
	pod, err := n.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	return n.ensureStatus(ctx, pod, sp)
}

func (n *Node) setCaptured(sp *simPod, v bool) {
	n.mu.Lock()
	sp.captured = v
	n.mu.Unlock()
}

// Stop stops the node's loops and removes every kernel object it created. It does not
// delete API objects (the control plane is thrown away with them).
func (n *Node) Stop() error {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	var errs []error
	if real := n.realCNI(); real != nil {
		errs = append(errs, real.stop())
	}
	return errors.Join(append(errs, n.sim.Close())...)
}

// simulatedOnly is the error of a fault injection that only the simulated istio-cni supports.
func simulatedOnly(what, instead string) error {
	return fmt.Errorf("sandbox: %s plays the simulated istio-cni; on a real-CNI node use %s", what, instead)
}

func (n *Node) lookup(namespace, name string) (*simPod, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, sp := range n.pods {
		if sp.ns == namespace && sp.name == name {
			return sp, nil
		}
	}
	return nil, fmt.Errorf("pod %s/%s is not running on %s", namespace, name, n.opt.NodeName)
}

// Pod returns the kernel-side pod for namespace/name.
func (n *Node) Pod(namespace, name string) (*podsim.Pod, error) {
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return nil, err
	}
	return sp.pod, nil
}

// Flush destroys ztunnel's listeners in the pod's netns (all of them when ports is empty)
// the way a reboot orphan loses them, leaving the annotation as it is.
func (n *Node) Flush(namespace, name string, ports ...uint16) error {
	if n.real != nil {
		return simulatedOnly("Flush", "RealCNI().Control().Lose")
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	return n.sim.Flush(sp.pod, ports...)
}

// Recapture re-adds the pod as istio-cni does: its in-pod routing rules (kept as they are
// when already there; a netns from ReplaceNetns has none), then ztunnel's listeners.
func (n *Node) Recapture(namespace, name string) error {
	if n.real != nil {
		return simulatedOnly("Recapture", "RealCNI().Control().Restore, or a toggle")
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	if err := n.sim.Redirect(sp.pod); err != nil {
		return err
	}
	return n.sim.Capture(sp.pod, n.opt.DNS)
}

// Unredirect removes istio-cni's in-pod routing rule and route from the pod's netns and
// leaves ztunnel's listeners in place: rules gone, listeners stay — the bypass of
// istio/istio #56652 (the pod looks healthy to meshed peers while its own outbound and
// plaintext inbound skip ztunnel). The annotation stays as it is.
func (n *Node) Unredirect(namespace, name string) error {
	if n.real != nil {
		return simulatedOnly("Unredirect", "NetnsExec in the pod's netns (istio-cni owns its rules)")
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	return n.sim.Unredirect(sp.pod)
}

// Redirect installs istio-cni's in-pod routing rule and route in the pod's current netns
// again (idempotent). With Flush first it makes the blackhole case: rules present,
// listeners gone.
func (n *Node) Redirect(namespace, name string) error {
	if n.real != nil {
		return simulatedOnly("Redirect", "NetnsExec in the pod's netns (istio-cni owns its rules)")
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	return n.sim.Redirect(sp.pod)
}

// ReplaceNetns recreates the pod's sandbox in a fresh, empty netns (no listeners, no rules)
// while the pod keeps its UID and annotation (istio/istio #61182).
func (n *Node) ReplaceNetns(namespace, name string) error {
	if n.real != nil {
		return simulatedOnly("ReplaceNetns", "RecreateSandbox")
	}
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	return n.sim.ReplaceNetns(sp.pod)
}

// createInfraPods creates the node's ztunnel and istio-cni pods the way their DaemonSets
// would (bound to the node, in the system namespace, labelled as Istio's charts label
// them). The node then runs them like any pod; enroll never expects them captured.
func (n *Node) createInfraPods(ctx context.Context) error {
	const ns = "istio-system"
	_, err := n.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	pods := []*corev1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ztunnel-" + n.opt.NodeName,
			Labels: map[string]string{enroll.LabelApp: enroll.AppZtunnel, enroll.LabelDataplaneMode: enroll.DataplaneModeNone}},
		Spec: corev1.PodSpec{NodeName: n.opt.NodeName, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "istio-proxy", Image: n.ztunnelImage()}}},
	}, {
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "istio-cni-node-" + n.opt.NodeName,
			Labels: map[string]string{enroll.LabelK8sApp: enroll.AppIstioCNI, enroll.LabelDataplaneMode: enroll.DataplaneModeNone}},
		Spec: corev1.PodSpec{NodeName: n.opt.NodeName, TerminationGracePeriodSeconds: ptr.To[int64](1), HostNetwork: true,
			Containers: []corev1.Container{{Name: "install-cni", Image: "registry.invalid/istio/install-cni:" + ZtunnelVersion + "-distroless"}}},
	}}
	if n.real != nil {
		pods = pods[:1] // the real istio-cni-node DaemonSet runs the node's istio-cni pod
	}
	for _, pod := range pods {
		// A new namespace's default ServiceAccount appears a moment later (the
		// ServiceAccount admission plugin refuses pods until then): retry like a
		// controller would.
		var last error
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, last = n.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			return last == nil || apierrors.IsAlreadyExists(last), nil
		})
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w (last error: %v)", ns, pod.Name, err, last)
		}
	}
	return nil
}
