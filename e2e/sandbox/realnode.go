package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/e2e/istiocni"
)

// The kubelet and runtime roles of a real-CNI node (Options.RealCNI).

// RealCNI returns the node's real istio-cni side, or nil on a simulated node.
func (n *Node) RealCNI() *RealCNI { return n.real }

func (n *Node) realCNI() *RealCNI { return n.real }

func (n *Node) ztunnelImage() string {
	if n.real != nil {
		return "registry.invalid/istio/ztunnel:" + istiocni.AgentVersion + "-distroless"
	}
	return "registry.invalid/istio/ztunnel:1.28.0-distroless"
}

// enqueue puts a pod on the kubelet's work queue (dropped when the queue is full: a later event
// or the next requeue brings it back).
func (n *Node) enqueue(uid types.UID) {
	select {
	case n.queue <- uid:
	default:
		n.logf("work queue full, dropped %s", uid)
	}
}

// requeueIstioPods has the kubelet look at the agent's and ztunnel's pods again (their
// readiness follows the processes).
func (n *Node) requeueIstioPods() {
	if n.podStore == nil {
		return
	}
	for _, o := range n.podStore.List() {
		if p, ok := o.(*corev1.Pod); ok && p.Namespace == istiocni.Namespace {
			n.enqueue(p.UID)
		}
	}
}

func refOf(sp *simPod) podRef { return podRef{namespace: sp.ns, name: sp.name, uid: sp.uid} }

// ensureNetwork gives a started pod sandbox its network through the active CNI chain, once
// (RunPodSandbox). On failure it undoes the attempt (DEL), logs as the kubelet's
// FailedCreatePodSandBox event would, and retries after a back-off (0.5 s doubling to 10 s);
// the pod has no status until then. hostNetwork pods need nothing.
func (n *Node) ensureNetwork(ctx context.Context, real *RealCNI, pod *corev1.Pod, sp *simPod) bool {
	if pod.Spec.HostNetwork {
		return true
	}
	n.mu.Lock()
	have := sp.net != nil
	n.mu.Unlock()
	if have {
		return true
	}
	if err := n.attachNetwork(ctx, real, sp); err != nil {
		n.mu.Lock()
		sp.addBackoff = min(max(2*sp.addBackoff, 500*time.Millisecond), 10*time.Second)
		backoff := sp.addBackoff
		n.mu.Unlock()
		if ctx.Err() == nil {
			n.logf("FailedCreatePodSandBox %s/%s (retry in %s): %v", pod.Namespace, pod.Name, backoff, err)
			uid := pod.UID
			time.AfterFunc(backoff, func() {
				if ctx.Err() == nil {
					n.enqueue(uid)
				}
			})
		}
		return false
	}
	return true
}

// attachNetwork runs ADD for sp's current sandbox; on failure the half-made attempt is deleted.
func (n *Node) attachNetwork(ctx context.Context, real *RealCNI, sp *simPod) error {
	n.mu.Lock()
	sp.generation++
	id := fmt.Sprintf("%s-%d", sp.pod.SandboxID[:48], sp.generation)
	netns := fmt.Sprintf("/proc/%d/ns/net", sp.pod.PID)
	n.mu.Unlock()
	ip, err := real.add(ctx, refOf(sp), id, netns)
	if err != nil {
		return errors.Join(err, real.del(context.WithoutCancel(ctx), refOf(sp), id, netns))
	}
	n.mu.Lock()
	sp.net = &sandboxNetwork{id: id, netns: netns, ip: ip}
	sp.ip = ip
	sp.addBackoff = 0
	n.mu.Unlock()
	n.logf("sandbox %s/%s network: %s (%s, netns %s)", sp.ns, sp.name, ip, id, netns)
	return nil
}

// releaseNetwork runs DEL for sp's sandbox (StopPodSandbox), if it has a network.
func (n *Node) releaseNetwork(real *RealCNI, sp *simPod) {
	n.mu.Lock()
	net := sp.net
	sp.net = nil
	n.mu.Unlock()
	if net == nil {
		return
	}
	if err := real.del(context.Background(), refOf(sp), net.id, net.netns); err != nil {
		n.logf("StopPodSandbox %s/%s: %v", sp.ns, sp.name, err)
	}
}

// KillSandbox plays a pod sandbox dying without the kubelet noticing yet, as on a node that
// loses power: every process of the pod ends and its netns goes with its last reference (a
// ztunnel or istio-cni still holding it keeps it alive). The pod keeps its UID, annotations and
// last status; the kubelet leaves it alone until RecreateSandbox. Real-CNI mode only.
func (n *Node) KillSandbox(namespace, name string) error {
	if n.realCNI() == nil {
		return errors.New("KillSandbox needs a real-CNI node")
	}
	n.kubelet.Lock()
	defer n.kubelet.Unlock()
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	if err := n.sim.StopSandbox(sp.pod); err != nil {
		return err
	}
	n.mu.Lock()
	sp.dead = true
	if sp.net != nil {
		// The path named the dead sandbox's pid, which the kernel may hand to another process:
		// a later DEL must not enter it.
		sp.net.netns = ""
	}
	n.mu.Unlock()
	n.logf("sandbox %s/%s killed", namespace, name)
	return nil
}

// RecreateSandbox plays the kubelet re-creating a pod's sandbox (after KillSandbox, or killing
// it first), as after a node reboot or a runtime crash: the runtime's DEL releases the old
// sandbox's IP (its netns is gone, so without one), and a new sandbox in a fresh netns gets its
// network from the chain that is active now (ADD). The pod keeps its UID and annotations. With
// postStatus false the kubelet does not report the new IP yet (a kubelet slow to sync status
// after a reboot); ReleaseStatus posts it. Real-CNI mode only.
func (n *Node) RecreateSandbox(ctx context.Context, namespace, name string, postStatus bool) (netip.Addr, error) {
	real := n.realCNI()
	if real == nil {
		return netip.Addr{}, errors.New("RecreateSandbox needs a real-CNI node")
	}
	n.kubelet.Lock()
	defer n.kubelet.Unlock()
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return netip.Addr{}, err
	}
	n.mu.Lock()
	old, dead := sp.net, sp.dead
	sp.net = nil
	sp.holdStatus = !postStatus
	n.mu.Unlock()
	if !dead {
		if err := n.sim.StopSandbox(sp.pod); err != nil {
			return netip.Addr{}, err
		}
	}
	if old != nil {
		if err := real.del(ctx, refOf(sp), old.id, ""); err != nil {
			n.logf("StopPodSandbox %s/%s (old sandbox): %v", namespace, name, err)
		}
	}
	if err := n.sim.StartSandbox(sp.pod); err != nil {
		return netip.Addr{}, err
	}
	n.mu.Lock()
	sp.dead = false
	n.mu.Unlock()
	if err := n.attachNetwork(ctx, real, sp); err != nil {
		return netip.Addr{}, err
	}
	n.mu.Lock()
	ip := sp.ip
	n.mu.Unlock()
	n.enqueue(sp.uid) // post the status (unless held)
	return ip, nil
}

// ReleaseStatus lets the kubelet post a held sandbox's status (its new pod IP).
func (n *Node) ReleaseStatus(namespace, name string) error {
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return err
	}
	n.mu.Lock()
	sp.holdStatus = false
	n.mu.Unlock()
	n.enqueue(sp.uid)
	return nil
}

// PodIP returns the IP the node gave the pod's current sandbox.
func (n *Node) PodIP(namespace, name string) (netip.Addr, error) {
	sp, err := n.lookup(namespace, name)
	if err != nil {
		return netip.Addr{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return sp.ip, nil
}
