package detect

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReportJSONContract(t *testing.T) {
	rep := Report{Checked: 2, Findings: []Finding{
		{Namespace: "shop", Name: "a", UID: "u", Node: "n", IP: "10.0.0.5", Class: ClassSkipped, Expected: []uint16{}, Present: []uint16{}},
		{Namespace: "shop", Name: "b", Class: ClassOrphaned, Expected: []uint16{15001, 15006, 15008}, Present: []uint16{},
			Missing: []uint16{15001, 15006, 15008}, NotReadyFor: Duration(90 * time.Second), FirstSeen: t0, Confirmations: 2, Confirmed: true},
	}}
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var raw struct {
		Checked  int              `json:"checked"`
		Findings []map[string]any `json:"findings"`
	}
	require.NoError(t, json.Unmarshal(b, &raw))
	assert.Equal(t, 2, raw.Checked)
	for _, k := range []string{"namespace", "name", "uid", "node", "ip", "class", "expected", "present", "ready", "confirmations", "confirmed"} {
		assert.Contains(t, raw.Findings[0], k)
	}
	assert.Equal(t, []any{}, raw.Findings[0]["expected"], "never null")
	assert.Equal(t, []any{}, raw.Findings[0]["present"], "never null")
	assert.NotContains(t, raw.Findings[0], "firstSeen")
	assert.NotContains(t, raw.Findings[0], "notReadyFor")
	assert.Equal(t, "1m30s", raw.Findings[1]["notReadyFor"])
	assert.Equal(t, "2026-11-23T12:00:00Z", raw.Findings[1]["firstSeen"])
	assert.Equal(t, []any{15001.0, 15006.0, 15008.0}, raw.Findings[1]["expected"])

	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, Duration(90*time.Second), back.Findings[1].NotReadyFor)
	assert.Len(t, back.Actionable(), 1)
}
