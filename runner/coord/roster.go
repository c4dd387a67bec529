package coord

import "context"

// Leave tells the other replicas that this one is going: every term stops
// firing now (the hand-over marks count from here), and its member record
// is removed (Options.Members), so that they assign its shards to
// themselves and wait in their elections while it drains; its resignations
// then hand each shard over at once. Call it before the runner drains;
// Run's end does the rest.
func (c *Coordinator) Leave(ctx context.Context) {
	for _, t := range c.Terms() {
		t.StopFiring()
	}
	if c.opts.Members != nil {
		c.opts.Members.Leave(ctx)
	}
}
