package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfile pins every base image by digest, puts CA certificates in
// every runtime image, and stamps the version it builds into the binary and
// the image label, so that a tag built with `make image VERSION=x` runs a
// binary whose pacer_build_info says x.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	type stage struct {
		name, base string
		body       []string
	}
	var stages []*stage
	from := regexp.MustCompile(`^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?`)
	for _, line := range strings.Split(string(b), "\n") {
		if m := from.FindStringSubmatch(line); m != nil {
			stages = append(stages, &stage{name: m[2], base: m[1]})
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, line)
		}
	}
	if len(stages) < 3 {
		t.Fatalf("Dockerfile: %d stages, want build, runtime-debian and the default runtime", len(stages))
	}
	digest := regexp.MustCompile(`^[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$`)
	for i, s := range stages {
		if !digest.MatchString(s.base) {
			t.Errorf("stage %d (%s): FROM %s is not pinned by digest", i, s.name, s.base)
		}
		if s.name == "build" {
			if !strings.Contains(strings.Join(s.body, "\n"), "-X main.version=${VERSION}") {
				t.Error("the build stage does not stamp ${VERSION} into main.version")
			}
			continue
		}
		body := strings.Join(s.body, "\n")
		// distroless/static ships /etc/ssl/certs/ca-certificates.crt;
		// anything else must bring a bundle.
		if !strings.Contains(s.base, "distroless/static") && !strings.Contains(body, "ca-certificates") {
			t.Errorf("runtime stage %s (%s) has no CA certificates", s.name, s.base)
		}
		if !strings.Contains(body, "org.opencontainers.image.version=${VERSION}") {
			t.Errorf("runtime stage %s does not label the image with its version", s.name)
		}
		if !strings.Contains(body, "USER 65532") && !strings.Contains(body, "USER nonroot") {
			t.Errorf("runtime stage %s runs as root", s.name)
		}
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`--build-arg VERSION=\$\(VERSION\) -t \$\(IMAGE\):\$\(VERSION\)`).Match(mk) {
		t.Error("Makefile: `make image` must tag the image with the VERSION it builds with")
	}
}
