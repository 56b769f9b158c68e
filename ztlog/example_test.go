package ztlog_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshmedic/meshmedic/ztlog"
)

// Two ztunnel records, one behind a `kubectl logs --timestamps` prefix: an outbound
// HBONE connection refused by the destination (its 15008 listener is gone) and an
// inbound plaintext connection rejected by policy (its source bypassed ztunnel).
func Example() {
	logs := strings.Join([]string{
		"2026-08-26T05:11:08.730001234Z 2026-08-26T05:11:08.729972Z\terror\taccess\tconnection complete\t" +
			`src.addr=10.42.1.122:34286 dst.addr=10.42.1.154:15008 dst.workload="cnpg-cluster-1" dst.namespace="opset-datastore" direction="outbound" error="io error: Connection refused (os error 111)"`,
		"inboundAddr: '[::]:15008'",
		"2024-10-30T11:49:40.421833Z\terror\taccess\tconnection complete\t" +
			`src.addr=192.168.240.64:55909 dst.addr=192.168.14.30:5050 direction="inbound" error="connection closed due to policy rejection: allow policies exist, but none allowed"`,
	}, "\n")

	a, err := ztlog.NewAnalyzer()
	if err != nil {
		panic(err)
	}
	res, err := a.Analyze(context.Background(), "ztunnel.log", strings.NewReader(logs))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d lines, %d records\n", res.LinesRead, res.Records)
	for _, s := range res.Signals {
		fmt.Printf("%s:%d %s side=%s ip=%s pod=%s/%s\n", s.File, s.Line, s.Kind, s.Side, s.IP, s.Namespace, s.Workload)
	}
	// Output:
	// 3 lines, 2 records
	// ztunnel.log:1 hbone-refused side=dst ip=10.42.1.154 pod=opset-datastore/cnpg-cluster-1
	// ztunnel.log:3 unidentified-policy-rejection side=src ip=192.168.240.64 pod=/
}

func ExampleScanner() {
	sc := ztlog.NewScanner(strings.NewReader(
		"2024-04-04T07:16:36.301267Z  INFO proxy{uid=66fe}: ztunnel::proxy::inbound_passthrough: accepted connection source=10.244.0.7:39864 component=\"inbound plaintext\"\n"))
	for sc.Scan() {
		r := sc.Record()
		v, _ := r.Get("component")
		fmt.Println(r.Format, r.Level, r.Target, r.Spans[0].Name, "|", r.Message, "|", v)
	}
	// Output:
	// legacy info proxy::inbound_passthrough proxy | accepted connection | inbound plaintext
}
