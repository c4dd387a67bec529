package coord

import (
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// IsNoSpace reports whether err is etcd refusing a write because its
// database reached its space quota (the NOSPACE alarm).
func IsNoSpace(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		strings.Contains(err.Error(), rpctypes.ErrGRPCNoSpace.Error()))
}

// NoSpaceHelp is the one line that says what etcd's NOSPACE alarm means
// and how to clear it.
const NoSpaceHelp = "etcd's database reached its space quota (NOSPACE alarm): every write is refused, so no slot can be claimed or recorded. " +
	"Fix: compact and defragment etcd (etcdctl compact $(etcdctl endpoint status -w json | jq .[0].Status.header.revision); etcdctl defrag), " +
	"then etcdctl alarm disarm; or raise the quota (etcd --quota-backend-bytes; embedded etcd: cluster.embedded.quota_bytes)"

// noteWriteError logs NoSpaceHelp, at most once a minute, when a write
// failed because etcd is out of space.
func (c *Coordinator) noteWriteError(err error) {
	if !IsNoSpace(err) {
		return
	}
	now := time.Now().UnixNano()
	last := c.noSpaceLogged.Load()
	if last != 0 && now-last < int64(time.Minute) || !c.noSpaceLogged.CompareAndSwap(last, now) {
		return
	}
	c.log.Error(NoSpaceHelp, "error", err.Error())
}
