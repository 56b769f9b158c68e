package ztlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// PodRef names one ztunnel pod whose logs are read.
type PodRef struct {
	Namespace string
	Name      string
	// Node is the pod's node, when known: signals read from it were seen there.
	Node string
}

func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// LogSource is what cluster mode needs from Kubernetes: the ztunnel pods and a log
// stream per pod. A frontend implements it over client-go; ztlog stays free of it.
type LogSource interface {
	ZtunnelPods(ctx context.Context) ([]PodRef, error)
	// Stream returns the pod's log from since on (zero: everything kept). The caller
	// closes it.
	Stream(ctx context.Context, pod PodRef, since time.Time) (io.ReadCloser, error)
}

// DefaultClusterConcurrency bounds how many ztunnel logs are read at once.
const DefaultClusterConcurrency = 4

// ClusterResult is the merged result of every ztunnel pod's log.
type ClusterResult struct {
	Result
	// Pods lists the pods read, in the order ZtunnelPods returned them.
	Pods []PodRef `json:"pods"`
	// Failed lists the pods whose log could not be read (their errors are joined in
	// the error AnalyzeCluster returns).
	Failed []PodRef `json:"failed"`
}

// AnalyzeCluster reads every ztunnel pod's log from since on, at most concurrency at a
// time (DefaultClusterConcurrency when ≤0), and returns the candidates found. Signals
// carry "<namespace>/<name>" of the ztunnel pod as their File. A pod whose log cannot
// be opened or read does not stop the others: its error is returned (joined, naming
// the pod) beside the partial result. Verifying candidates against pods is not done
// here (detect does it).
func AnalyzeCluster(ctx context.Context, src LogSource, since time.Time, concurrency int, opts ...Option) (*ClusterResult, error) {
	pods, err := src.ZtunnelPods(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing ztunnel pods: %w", err)
	}
	a, err := NewAnalyzer(opts...)
	if err != nil {
		return nil, err
	}
	if concurrency <= 0 {
		concurrency = DefaultClusterConcurrency
	}
	results := make([]*Result, len(pods))
	errs := make([]error, len(pods))
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i, p := range pods {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = fmt.Errorf("ztunnel pod %s: %w", p, ctx.Err())
			continue
		}
		wg.Add(1)
		go func(i int, p PodRef) {
			defer wg.Done()
			defer func() { <-sem }()
			results[i], errs[i] = analyzePod(ctx, a, src, p, since)
		}(i, p)
	}
	wg.Wait()
	out := &ClusterResult{Pods: pods}
	for i, r := range results {
		if r != nil {
			out.Merge(r)
		}
		if errs[i] != nil {
			out.Failed = append(out.Failed, pods[i])
		}
	}
	return out, errors.Join(errs...)
}

func analyzePod(ctx context.Context, a *Analyzer, src LogSource, p PodRef, since time.Time) (*Result, error) {
	rc, err := src.Stream(ctx, p, since)
	if err != nil {
		return nil, fmt.Errorf("ztunnel pod %s: opening log: %w", p, err)
	}
	defer rc.Close()
	res, err := a.Analyze(ctx, p.String(), rc)
	if err != nil {
		return res, fmt.Errorf("ztunnel pod %s: %w", p, err)
	}
	return res, nil
}
