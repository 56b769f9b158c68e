package detect_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/netns"
)

// An operator scans a namespace with its own prober; here a fake that finds ztunnel's
// listeners in every pod except "reviews".
func ExampleEngine_Scan() {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}
	mk := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name),
				Annotations: map[string]string{"ambient.istio.io/redirection": "enabled"}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}},
		}
	}
	cs := fake.NewClientset(ns, mk("productpage"), mk("reviews"))
	src := detect.NewAPISource(cs.CoreV1(), cs.CoreV1())
	prober := detect.ProberFunc(func(_ context.Context, pod *corev1.Pod) (detect.Probe, error) {
		l := netns.Listeners{Ports: []uint16{15001, 15006, 15008}, TCP6: netns.Table{Status: netns.TableOK}, TCP: netns.Table{Status: netns.TableOK}}
		if pod.Name == "reviews" {
			l.Ports = nil
		}
		return detect.Probe{Listeners: l, Source: "example"}, nil
	})
	rep, err := detect.New(src, src, prober).Scan(context.Background(), "shop")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("checked", rep.Checked)
	for _, f := range rep.Findings {
		fmt.Println(f.Key(), f.Class, "missing", f.Missing)
	}
	// Output:
	// checked 2
	// shop/productpage captured missing []
	// shop/reviews orphaned missing [15001 15006 15008]
}
