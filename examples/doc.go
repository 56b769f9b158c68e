// Package examples holds runnable programs that show an operator author embedding
// meshmedic's detect and heal packages.
package examples
