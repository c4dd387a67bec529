// Package jsonl appends JSON lines to a file, for the test plugins that leave
// a record of each run (ledger, testplugin's stamp task).
package jsonl

import (
	"encoding/json"
	"os"
)

// Append marshals v and appends it with a newline to the file at path,
// creating the file if need be. The line goes out in one write to a file
// opened with O_APPEND, so on a local Linux file system lines that
// concurrent processes append do not interleave.
func Append(path string, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
