package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/detect"
)

func sample() detect.Report {
	return detect.Report{Checked: 3, Findings: []detect.Finding{
		{Namespace: "shop", Name: "cart", Class: detect.ClassCaptured, Expected: []uint16{15001, 15006, 15008}, Present: []uint16{15001, 15006, 15008}},
		{Namespace: "shop", Name: "web", Class: detect.ClassOrphaned, Node: "n1", Expected: []uint16{15001, 15006, 15008}, Present: []uint16{}, Ready: true, Detail: "annotated enabled but no ztunnel listener in the pod's netns"},
		{Namespace: "shop", Name: "new", Class: detect.ClassUnknown, Expected: []uint16{15001, 15006, 15008}, Present: []uint16{}},
	}}
}

func TestRenderTableListsBrokenAndUnverifiedPods(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, render(&b, "table", sample()))
	out := b.String()
	assert.Contains(t, out, "NAMESPACE")
	assert.Regexp(t, `shop\s+web\s+orphaned\s+true\s+15001,15006,15008\s+-\s+n1`, out)
	assert.Regexp(t, `shop\s+new\s+unknown`, out)
	assert.NotContains(t, out, "cart", "captured pods are not findings")
	assert.Contains(t, out, "3 pod(s) checked, 2 listed")
}

func TestRenderJSONIsTheScanShape(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, render(&b, "json", sample()))
	var got struct {
		Checked  int `json:"checked"`
		Findings []struct {
			Name, Class string
			Present     []uint16
		} `json:"findings"`
	}
	require.NoError(t, json.Unmarshal(b.Bytes(), &got), b.String())
	assert.Equal(t, 3, got.Checked)
	require.Len(t, got.Findings, 2)
	assert.Equal(t, "web", got.Findings[0].Name)
	assert.Equal(t, "orphaned", got.Findings[0].Class)
	assert.NotNil(t, got.Findings[0].Present, "present is [] not null")
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"-o", "yaml"}, {"-no-such-flag"}, {"-prober", "ssh"}} {
		var out, errb bytes.Buffer
		assert.Equal(t, 2, run(context.Background(), args, &out, &errb), "%v", args)
		assert.NotEmpty(t, errb.String())
	}
	// node-local without -node is refused before the kubeconfig is even read.
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"-prober", "node-local", "-kubeconfig", "/nonexistent"}, &out, &errb)
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), "give -node")
}
