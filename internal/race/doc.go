// Package race says whether the race detector is built in, for tests whose
// figures or assumptions it changes (it slows code down and makes
// sync.Pool drop a share of what is put).
package race
