package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/sdk"
)

// drainLimit bounds how much of a body is read, and discarded, past
// max_response_bytes to measure it. A longer (or endless) body stops there.
const drainLimit = 4 << 20

func requestTask(ctx context.Context, p params, resp *sdk.Response) error {
	r, err := p.validate()
	if err != nil {
		return err
	}
	return r.do(ctx, resp)
}

// timeoutError is the cause of a context ended by the timeout param.
type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string {
	return fmt.Sprintf("no complete response within %s (timeout param)", e.d)
}
func (e timeoutError) Unwrap() error { return context.DeadlineExceeded }

func (r *request) do(ctx context.Context, resp *sdk.Response) error {
	target := shownURL(r.url)
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, r.timeout, timeoutError{r.timeout})
		defer cancel()
	}

	// A transport of our own: the TLS settings are per job, and nothing
	// outlives the call.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.tls != nil {
		tr.TLSClientConfig = r.tls
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: r.checkRedirect}

	hreq, err := r.newRequest(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %v", r.method, target, err)
	}

	start := time.Now()
	status, final := 0, target
	body, n, truncated, err := func() (string, int64, bool, error) {
		hresp, err := client.Do(hreq)
		if err != nil {
			return "", 0, false, err
		}
		defer hresp.Body.Close()
		status, final = hresp.StatusCode, shownURL(hresp.Request.URL)
		return readBody(hresp.Body, r.maxResponse)
	}()
	elapsed := time.Since(start).Milliseconds()

	resp.Output = body
	resp.Data = map[string]any{"duration_ms": elapsed, "url": final}
	if status != 0 {
		resp.Data["status"] = status
		resp.Data["response_bytes"] = n
		resp.Data["truncated"] = truncated
	}
	switch {
	case err != nil:
		err = r.failure(ctx, target, err)
	case !r.expect.match(status):
		err = fmt.Errorf("%s %s: status %d, expected %s", r.method, target, status, r.expect)
		if final != target {
			err = fmt.Errorf("%w (final URL %s)", err, final)
		}
		if status/100 == 3 && !r.followRedirects {
			err = fmt.Errorf("%w; follow_redirects is off", err)
		}
	}

	if err != nil {
		err = boundError(err)
	}
	level, msg := slog.LevelInfo, "http request"
	attrs := []any{"method", r.method, "url", final, "status", status, "duration_ms", elapsed}
	if err != nil {
		level, msg = slog.LevelWarn, "http request failed"
		attrs = append(attrs, "error", err.Error())
	}
	sdk.Logger(ctx).Log(ctx, level, msg, attrs...)
	return err
}

func (r *request) newRequest(ctx context.Context) (*http.Request, error) {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body) // NewRequest sets GetBody: 307/308 redirects resend it
	}
	hreq, err := http.NewRequestWithContext(ctx, r.method, r.url.String(), body)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	hreq.Header = r.header.Clone()
	if r.host != "" {
		hreq.Host = r.host
	}
	info := sdk.Info(ctx)
	setDefault(hreq.Header, "X-Correlation-ID", info.CorrelationID)
	setDefault(hreq.Header, "X-Pacer-Run-ID", info.RunID)
	setDefault(hreq.Header, "User-Agent", "pacer-http/"+version)
	return hreq, nil
}

// setDefault sets a header the job did not set itself.
func setDefault(h http.Header, key, value string) {
	if value == "" {
		return
	}
	if _, ok := h[http.CanonicalHeaderKey(key)]; !ok {
		h.Set(key, value)
	}
}

func (r *request) checkRedirect(_ *http.Request, via []*http.Request) error {
	if !r.followRedirects {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// failure explains an error from sending the request or reading the answer,
// without repeating the raw URL that net/http puts in its errors.
func (r *request) failure(ctx context.Context, target string, err error) error {
	if ctx.Err() != nil {
		cause := stopCause(ctx)
		var te timeoutError
		if errors.As(cause, &te) {
			return fmt.Errorf("%s %s: %w", r.method, target, cause)
		}
		return fmt.Errorf("%s %s: stopped: %w", r.method, target, cause)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var hint string
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		hint = " (set tls.ca_file to the CA that signed the server's certificate)"
	case errors.As(err, &badName):
		hint = " (set tls.server_name if the certificate is issued for another name)"
	}
	return fmt.Errorf("%s %s: %w%s", r.method, target, err, hint)
}

// stopCause is why ctx ended: its cause, which also matches ctx.Err() with
// errors.Is even when the cause (say, the runner's reason) does not wrap it.
func stopCause(ctx context.Context) error {
	cause, err := context.Cause(ctx), ctx.Err()
	if errors.Is(cause, err) {
		return cause
	}
	return causeError{cause, err}
}

type causeError struct{ cause, ctxErr error }

func (e causeError) Error() string   { return e.cause.Error() }
func (e causeError) Unwrap() []error { return []error{e.cause, e.ctxErr} }

// maxShownURL bounds a URL as the task shows it (its error, log line and
// data): a redirect's Location is the remote side's to choose, up to the
// 10 MB of headers net/http accepts.
const maxShownURL = 2 << 10

// shownURL is displayURL(u), its end cut past maxShownURL with a note of
// the bytes cut (linesplit.Cut: a JWT cut in two is marked so that the
// sanitizer still masks its piece).
func shownURL(u *url.URL) string {
	s := displayURL(u)
	if len(s) <= maxShownURL {
		return s
	}
	n := linesplit.Cut(s, maxShownURL)
	return linesplit.Head(s, n) + fmt.Sprintf(" [URL cut: %d more bytes]", len(s)-n)
}

// maxErrorBytes bounds the task's error, whose text may carry what the
// remote side sent (a malformed status line or header, a Location that
// does not parse). The runner keeps 16 KiB of a run's error.
const maxErrorBytes = 8 << 10

// boundError returns err, its text cut past maxErrorBytes between words
// (linesplit.KeepWords) with a note of the bytes cut, as the runner notes
// a cut; errors.Is and errors.As still see err.
func boundError(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorBytes {
		return err
	}
	n := linesplit.KeepWords(msg, maxErrorBytes)
	return cutError{msg[:n] + fmt.Sprintf("\n[truncated %d bytes]", len(msg)-n), err}
}

type cutError struct {
	msg string
	err error
}

func (e cutError) Error() string { return e.msg }
func (e cutError) Unwrap() error { return e.err }

// readBody keeps the first max bytes of body as text and counts the rest, up
// to drainLimit more. A body over max is cut between words
// (linesplit.KeepWords): a secret cut in two would escape the sanitizer.
func readBody(body io.Reader, max int) (text string, n int64, truncated bool, err error) {
	var buf bytes.Buffer
	n, err = io.Copy(&buf, io.LimitReader(body, int64(max)+1)) // +1: the first byte dropped
	b := buf.Bytes()
	if n > int64(max) { // read to the limit's end: err is nil
		var rest int64
		rest, err = io.Copy(io.Discard, io.LimitReader(body, drainLimit))
		n += rest
		truncated = true
		b = b[:linesplit.KeepWords(b, max)]
	}
	// Output travels as a protobuf string, which must be valid UTF-8.
	text = strings.ToValidUTF8(string(b), "\uFFFD")
	if truncated {
		text += fmt.Sprintf("\n[response truncated after %d bytes]", len(b))
	}
	return text, n, truncated, err
}
