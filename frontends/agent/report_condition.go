package agent

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/detect"
)

// conditionReporter publishes the meshmedic.io/AmbientCaptured condition on pods/status when
// its status changes — never for a finding the flap guard has not confirmed.
type conditionReporter struct {
	a         *Agent
	published map[types.UID]publishedCondition
}

type publishedCondition struct{ status corev1.ConditionStatus }

func (r *conditionReporter) report(ctx context.Context, s *sweep) {
	forget(r.published, s.present())
	for _, f := range s.rep.Findings {
		if f.Class == detect.ClassSkipped {
			continue
		}
		if f.Actionable() && !f.Confirmed {
			continue // not confirmed yet: do not flip the condition on a flap
		}
		cond := detect.AmbientCapturedCondition(f, s.at)
		if p, ok := r.published[f.UID]; ok && p.status == cond.Status {
			continue
		}
		if err := r.patch(ctx, f, cond); err != nil {
			r.a.log.Error(err, "publishing condition", "pod", f.Key())
			continue
		}
		r.published[f.UID] = publishedCondition{status: cond.Status}
	}
}

func (r *conditionReporter) patch(ctx context.Context, f detect.Finding, cond corev1.PodCondition) error {
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{cond}}})
	if err != nil {
		return err
	}
	_, err = r.a.cs.CoreV1().Pods(f.Namespace).Patch(ctx, f.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("pod %s: patch status: %w", f.Key(), err)
	}
	return nil
}

// findingEvents writes a Warning Event on a pod when a finding about it is newly confirmed
// (once per class, not once per sweep), and counts it.
type findingEvents struct {
	a        *Agent
	reported map[types.UID]detect.Class
}

func (r *findingEvents) report(_ context.Context, s *sweep) {
	forget(r.reported, s.present())
	for _, f := range s.rep.Findings {
		last := r.reported[f.UID]
		if !f.Confirmed {
			delete(r.reported, f.UID)
			continue
		}
		r.reported[f.UID] = f.Class
		if last == f.Class {
			continue
		}
		r.a.m.confirmed.Inc()
		r.a.log.Info("confirmed finding", "pod", f.Key(), "class", f.Class, "missing", f.Missing)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: f.Name, UID: f.UID}}
		r.a.events.Event(pod, corev1.EventTypeWarning, "MeshmedicAmbientOrphan",
			fmt.Sprintf("ambient capture missing (%s): expected %v, present %v", f.Class, f.Expected, f.Present))
	}
}
