package netns

import (
	"bytes"
	"errors"
	"strconv"
)

var errBadStat = errors.New("malformed stat file")

// parseStartTime returns field 22 (starttime, clock ticks after boot) of a /proc/<pid>/stat
// file. The command name (field 2) is in parentheses and may itself contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStartTime(data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errBadStat
	}
	rest := data[i+1:]
	// After ')' come fields 3.. separated by single spaces; starttime is field 22, the 20th.
	field := 0
	for len(rest) > 0 {
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		if end == 0 {
			break
		}
		field++
		if field == 20 {
			v, err := strconv.ParseUint(string(rest[:end]), 10, 64)
			if err != nil {
				return 0, errBadStat
			}
			return v, nil
		}
		rest = rest[end:]
	}
	return 0, errBadStat
}
