// Package config loads and validates Pacer's YAML configuration file
// (pacer run --config pacer.yaml).
//
// # Format
//
// The file is a single YAML document whose top level is a mapping. Every
// section is optional; an empty file, or one holding only comments, is a valid
// configuration with all defaults and no jobs. A file read again while the
// runner runs (ParseReload) must list its jobs ("jobs: []" for none), so
// that a half-written file is never taken for "no jobs". A complete example:
//
//	node:
//	  name: runner-1                  # default: the host name
//	cluster:
//	  name: prod                      # default "default"; a-z, 0-9, "-", "_"
//	  data_dir: /var/lib/pacer        # default "./data"
//	  lease_ttl: 10s                  # default 10s; whole seconds, 2s to 5m
//	  job_set_mismatch: refuse        # or warn: a replica whose jobs differ from the cluster's leads anyway
//	  job_set_settle: 5s              # a change in agreement must hold this long before it is acted on
//	  shards: 16                      # default 16, 1..256; the same on every replica
//	  shard_settle: 10s               # default 10s; membership calm before shards move
//	  etcd:
//	    endpoints: [https://etcd-1:2379, https://etcd-2:2379] # empty: embedded etcd
//	    dial_timeout: 5s              # at most 1m
//	    request_timeout: 5s           # at most 1m
//	    username: pacer
//	    password_env: PACER_ETCD_PASSWORD   # name of the variable, not the password
//	    tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem}
//	    compaction_interval: 5m       # the leader compacts older revisions; 0: never
//	  embedded:                       # the embedded etcd (no endpoints)
//	    client_url: http://127.0.0.1:2379   # or etcd.embedded.client_listen: host:port
//	    peer_url: http://127.0.0.1:2380     # or etcd.embedded.peer_listen: host:port
//	    quota_bytes: 2147483648       # etcd's space quota; default 2 GiB
//	    insecure_no_auth: false       # true: allow addresses other machines reach (no authentication)
//	http:
//	  listen: 127.0.0.1:9464          # a non-loopback address needs a token,
//	  token_env: PACER_API_TOKEN      # client certificates, or insecure_no_auth: true
//	  auth_all: false                 # true: read-only API calls need the token too (needs token_env)
//	  tls: {cert_file: api.pem, key_file: api-key.pem, client_ca_file: clients-ca.pem}
//	  max_connections: 256
//	  rate_limit: {per_second: 10, burst: 50}   # trigger, pause, resume
//	plugins:
//	  dir: ./bin/plugins
//	  start_timeout: 10s
//	  checksums: {shell: "sha256:<64 lowercase hex digits>"}
//	  paths: {shell: /usr/local/bin/pacer-shell}
//	  inherit_env: [SSL_CERT_FILE]    # runner variables every plugin process gets
//	observability:
//	  log: {level: info, format: json, queue_bytes: 8388608}  # debug|info|warn|error, json|text; lines waiting for a slow stderr
//	  tracing: {exporter: otlp, endpoint: 127.0.0.1:4317, insecure: true, sample_ratio: 0.5}
//	  sanitize:
//	    redact_keys: [password, token]
//	    patterns: [{name: aws_key, regex: "AKIA[0-9A-Z]{16}"}]
//	jobs:
//	  - id: backup                    # unique; A-Z a-z 0-9 . _ -; at most 128 chars
//	    plugin: shell
//	    task: run
//	    schedule: "30 2 * * *"        # see package schedule
//	    timezone: Europe/Berlin       # IANA name, default UTC
//	    timeout: 15m                  # default 1m; at most 168h
//	    retries: {max: 3, initial_backoff: 1s, max_backoff: 1m}
//	    overlap: forbid               # forbid|allow|replace
//	    max_concurrency: 10           # runs at once under allow; 1..10000
//	    misfire: {policy: once, grace: 1m}  # skip|once|all
//	    jitter: 30s
//	    params: {command: ["pg_dump", "app"], inherit_env: [PGPASSFILE, AWS_*]}  # free-form, passed to the task
//
// Durations are Go duration strings ("500ms", "10s", "1m30s", "2h"). A bare
// number is rejected because its unit would be a guess; 0 is the one number
// accepted without a unit. A key that is absent, null (~) or, for strings,
// empty takes its default; an explicit zero duration is kept and validated.
//
// Keys are matched exactly (snake_case). Unknown keys are errors, so a typo
// never silently falls back to a default. YAML anchors, aliases and merge keys
// (<<: *defaults) work anywhere; top-level keys starting with "x-" are ignored
// so that they can hold anchors shared by several jobs.
//
// # Errors
//
// Parse and Load report every problem in the file at once, not only the first,
// as a *Error. Each problem names the file, the line of the offending value
// (for a missing required key, the line of the mapping that lacks it), and the
// key path from the top of the document:
//
//	pacer.yaml:7: cluster.lease_ttl: invalid duration "ten seconds": want a number with a unit, such as "10s", "1m30s" or "2h"
//	pacer.yaml:12: jobs[0].retires: unknown key "retires" (did you mean "retries"?)
//	pacer.yaml:30: jobs[2].id: duplicate job id "backup" (first defined at line 21)
//
// Problems are sorted by line. Use errors.As to get at the individual
// problems:
//
//	var cerr *config.Error
//	if errors.As(err, &cerr) {
//		for _, p := range cerr.Problems { ... }
//	}
//
// Validation does not touch the environment or the file system beyond
// reading the file itself and the host name: variables named by *_env keys
// and files named by TLS keys are checked when they are used, not here.
// CheckFiles (the TLS files) and CheckPlugins (entries of plugins.checksums
// and plugins.paths for a plugin that no job uses and that has no binary)
// read this machine's files, for pacer validate and pacer run.
package config
