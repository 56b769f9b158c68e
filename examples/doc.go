// Package examples holds runnable programs that show an operator author embedding
// meshmedic's detect and heal packages; each directory is a main package whose package
// comment says what it shows and how to run it:
//
//   - controller: detect.Engine over the operator's own informers, a Prober chosen by flag,
//     and heal.Healer with its own budgets; dry run unless -yes.
//   - oneshot: one library call (Engine.ScanAndConfirm) from a kubeconfig, findings as a
//     table or JSON, exit 1 when an ambient pod is not captured.
//   - healtest: a custom heal policy and its unit tests with heal/healtest.
//
// The sandbox tier runs oneshot and controller against a real API server
// (TestSandbox/examples in e2e/).
package examples
