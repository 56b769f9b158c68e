// Package ztlog tokenizes ztunnel logs (plain and LOG_FORMAT=json, every version) into
// Records and matches them against a declarative table of orphan signatures, yielding
// Signals that name the implicated pod. It reads streams and never logs.
package ztlog
