// Package ztlog tokenizes ztunnel logs (≤1.21 text, the 1.22+ tab layout, LOG_FORMAT=json;
// behind any kubectl/CRI/log-UI prefix) into Records in bounded memory, and matches them
// against a declarative signature table (signatures.json) of orphan signals and lifecycle
// corroborations, yielding Signals that name the implicated pod. It reads streams and
// never logs; cluster mode reads ztunnel pods through the small LogSource interface.
package ztlog
