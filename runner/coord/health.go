package coord

import (
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsRefused reports whether err is etcd, or its client, refusing a request
// for what it is rather than for the moment it came: over etcd's request
// limit (--max-request-bytes, 1.5 MiB by default) or the client's send
// limit, or otherwise invalid. Sending it again is no use, unlike a write
// that timed out or came during an election (or NOSPACE, which an
// operator clears).
func IsRefused(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.InvalidArgument
	}
	if s, ok := status.FromError(err); ok {
		return s.Code() == codes.InvalidArgument ||
			s.Code() == codes.ResourceExhausted && strings.Contains(s.Message(), "larger than max")
	}
	return false
}

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
