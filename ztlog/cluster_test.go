package ztlog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshmedic/meshmedic/ztlog"
	"github.com/meshmedic/meshmedic/ztlog/ztlogtest"
)

const (
	clusterSigB = "2026-08-26T05:11:08.729972Z\terror\taccess\tconnection complete\tsrc.addr=10.42.1.122:34286 dst.addr=10.42.1.%d:15008 dst.workload=\"db-%d\" dst.namespace=\"data\" direction=\"outbound\" error=\"io error: Connection refused (os error 111)\"\n"
	clusterInfo = "2026-08-26T05:11:09Z\tinfo\tinpod::statemanager\tpod received, starting proxy\tuid=\"u%d\" name=\"p%d\" namespace=\"ns\"\n"
)

func TestAnalyzeClusterBoundedAndMerged(t *testing.T) {
	src := &ztlogtest.FakeSource{Logs: map[string]string{}, Errs: map[string]error{}}
	for i := 0; i < 8; i++ {
		p := ztlog.PodRef{Namespace: "istio-system", Name: fmt.Sprintf("ztunnel-%d", i), Node: fmt.Sprintf("node-%d", i)}
		src.Pods = append(src.Pods, p)
		// Big enough that streams overlap in time.
		src.Logs[p.String()] = strings.Repeat(fmt.Sprintf(clusterInfo, i, i), 2000) + fmt.Sprintf(clusterSigB, i, i)
	}
	broken := src.Pods[3]
	src.Errs[broken.String()] = errors.New("container not found")
	since := time.Date(2026, 8, 26, 0, 0, 0, 0, time.UTC)

	res, err := ztlog.AnalyzeCluster(context.Background(), src, since, 2)
	if err == nil || !strings.Contains(err.Error(), "ztunnel pod istio-system/ztunnel-3") || !strings.Contains(err.Error(), "container not found") {
		t.Fatalf("err = %v, want one naming the broken pod", err)
	}
	if res == nil {
		t.Fatal("no partial result")
	}
	if got := src.MaxOpen(); got < 1 || got > 2 {
		t.Errorf("at most 2 streams may be open at once, saw %d", got)
	}
	if len(res.Failed) != 1 || res.Failed[0] != broken || len(res.Pods) != 8 {
		t.Errorf("pods %v, failed %v", res.Pods, res.Failed)
	}
	// 14,000 corroborations: the first DefaultMaxSignals are kept, the rest counted.
	if len(res.Signals) != 7 || len(res.Corroborations) != ztlog.DefaultMaxSignals || res.CorroborationsOmitted != 7*2000-ztlog.DefaultMaxSignals {
		t.Fatalf("got %d signals, %d corroborations (%d omitted); want 7 and %d, bounded at %d", len(res.Signals), len(res.Corroborations), res.CorroborationsOmitted, 7*2000, ztlog.DefaultMaxSignals)
	}
	var files []string
	for _, s := range res.Signals {
		files = append(files, s.File)
		if s.Line != 2001 || s.Kind != "hbone-refused" {
			t.Errorf("signal %+v", s)
		}
	}
	sort.Strings(files)
	if files[0] != "istio-system/ztunnel-0" || files[6] != "istio-system/ztunnel-7" {
		t.Errorf("signals are not named by their ztunnel pod: %v", files)
	}
	for _, s := range src.Since() {
		if !s.Equal(since) {
			t.Errorf("Stream got since %v, want %v", s, since)
		}
	}
	if res.LinesRead != 7*2001 {
		t.Errorf("linesRead = %d", res.LinesRead)
	}
}

func TestAnalyzeClusterListError(t *testing.T) {
	src := &ztlogtest.FakeSource{ListErr: errors.New("forbidden")}
	_, err := ztlog.AnalyzeCluster(context.Background(), src, time.Time{}, 0)
	if err == nil || !strings.Contains(err.Error(), "listing ztunnel pods") || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("err = %v", err)
	}
}

// cancellingSource cancels the run when the first log is opened.
type cancellingSource struct {
	*ztlogtest.FakeSource
	cancel context.CancelFunc
}

func (c cancellingSource) Stream(ctx context.Context, p ztlog.PodRef, since time.Time) (io.ReadCloser, error) {
	c.cancel()
	return c.FakeSource.Stream(ctx, p, since)
}

func TestAnalyzeClusterCancelled(t *testing.T) {
	src := &ztlogtest.FakeSource{Logs: map[string]string{}}
	for i := 0; i < 3; i++ {
		p := ztlog.PodRef{Namespace: "istio-system", Name: fmt.Sprintf("ztunnel-%d", i)}
		src.Pods = append(src.Pods, p)
		src.Logs[p.String()] = strings.Repeat(fmt.Sprintf(clusterInfo, i, i), 20000)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := ztlog.AnalyzeCluster(ctx, cancellingSource{src, cancel}, time.Time{}, 1)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "listing") {
		t.Fatalf("err = %v, want the pods' reads cancelled", err)
	}
	if res == nil || len(res.Failed) != 3 {
		t.Fatalf("every pod should be reported failed: %+v", res)
	}
	if src.MaxOpen() > 1 {
		t.Errorf("MaxOpen = %d", src.MaxOpen())
	}
}
