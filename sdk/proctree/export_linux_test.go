package proctree

// SetScanHook runs f between a tree's scan of the processes below this one
// and its reading of which of them are unclaimed, until the test ends.
func SetScanHook(cleanup func(func()), f func()) {
	scanHook = f
	cleanup(func() { scanHook = nil })
}
