package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meshmedic/meshmedic/detect"
)

// ErrNothingVerified is returned (wrapped) by scan, repair and node scan when every pod
// they checked is unknown: nothing was verified, so neither "all good" (0) nor "findings"
// (1) would be true. Exit code 2.
var ErrNothingVerified = errors.New("nothing was verified")

// nothingVerified returns ErrNothingVerified when at least one pod was checked (skipped
// pods are not: nothing was expected of them) and every checked pod is unknown. why is the
// first pod's reason, when known.
func nothingVerified(classes []detect.Class, why string) error {
	checked := 0
	for _, c := range classes {
		switch c {
		case detect.ClassSkipped:
		case detect.ClassUnknown:
			checked++
		default:
			return nil
		}
	}
	if checked == 0 {
		return nil
	}
	err := fmt.Errorf("%w: all %s checked could not be read (class unknown)", ErrNothingVerified, pods(checked))
	if why != "" {
		err = fmt.Errorf("%w; the first: %s", err, why)
	}
	return err
}

// firstProbeError is the error of the first unknown finding.
func firstProbeError(fs []detect.Finding) string {
	for _, f := range fs {
		if f.Class == detect.ClassUnknown && (f.Error != "" || f.Detail != "") {
			why := f.Error
			if why == "" {
				why = f.Detail
			}
			if ref := f.Namespace + "/" + f.Name; !strings.Contains(why, ref) {
				why = ref + ": " + why
			}
			return why
		}
	}
	return ""
}

// nothingVerifiedIn applies nothingVerified to a detect report.
func nothingVerifiedIn(rep detect.Report) error {
	classes := make([]detect.Class, len(rep.Findings))
	for i, f := range rep.Findings {
		classes[i] = f.Class
	}
	return nothingVerified(classes, firstProbeError(rep.Findings))
}
