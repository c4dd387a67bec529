package coord

// MaxBatch is maxBatch, for tests.
const MaxBatch = maxBatch
