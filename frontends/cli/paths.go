package cli

import "path/filepath"

// filepathList splits a KUBECONFIG-style list (':' separated on Unix).
func filepathList(s string) []string {
	return filepath.SplitList(s)
}
