// Package cli is meshmedic's urfave/cli v2 application: each command turns flags into
// library options, makes one library call and renders the result. It never exits the
// process; frontends/meshmedic maps the errors it returns to exit codes.
package cli
