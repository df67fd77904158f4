package checker

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"upwatch.dev/shared/queue"
)

// outcome is a finished check waiting to be reported: its result goes to
// RESULTS, and once JetStream has stored it the check message is acked.
type outcome struct {
	msg       jetstream.Msg
	monitorID int64
	data      []byte
	delivered uint64
}

// Reporting gathers outcomes for up to reportLinger (or reportBatch of
// them) and publishes them together: the client then writes them, and
// later their acks, in a few system calls instead of one or two per check,
// and the server answers them in as few. It costs at most reportLinger of
// latency.
const (
	reportLinger = 10 * time.Millisecond
	reportBatch  = 256
)

// report publishes outcomes until in is closed and every outcome sent is
// published and acked (or handed back).
func (c *Checker) report(in <-chan outcome) {
	var pending sync.WaitGroup
	defer pending.Wait()
	batch := make([]outcome, 0, reportBatch)
	for o := range in {
		batch = append(batch[:0], o)
		timer := time.NewTimer(reportLinger)
	gather:
		for len(batch) < reportBatch {
			select {
			case o, ok := <-in:
				if !ok {
					break gather
				}
				batch = append(batch, o)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		futures := make([]jetstream.PubAckFuture, len(batch))
		for i, o := range batch {
			f, err := c.js.PublishAsync(queue.ResultSubject(o.monitorID), o.data)
			if err != nil {
				c.retryLater(o, err)
				continue
			}
			futures[i] = f
		}
		done := make([]outcome, len(batch))
		copy(done, batch)
		pending.Go(func() { c.settle(done, futures) })
	}
}

// settle acks each check whose outcome JetStream stored, and hands back the
// others. The outcome is stored before the check is acked: a crash in
// between redelivers the check, and the result's primary key makes the
// second outcome a no-op.
func (c *Checker) settle(batch []outcome, futures []jetstream.PubAckFuture) {
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			if err := batch[i].msg.Ack(); err != nil {
				c.logger.Warn("ack check", "monitor", batch[i].monitorID, "err", err)
			}
		case err := <-f.Err():
			c.retryLater(batch[i], err)
		case <-timeout.C:
			// No answer: leave the check unacked; it is redelivered after
			// AckWait and its outcome, if stored after all, is not doubled.
			c.logger.Warn("no ack for published results within 10s; their checks will be redelivered",
				"unconfirmed", len(batch)-i)
			return
		}
	}
}

// retryLater hands a check back with a back-off when its outcome could not
// be published. A check out of deliveries stays put and its advisory has
// the results service clear it.
func (c *Checker) retryLater(o outcome, err error) {
	wait := min(time.Duration(min(o.delivered, 100))*2*time.Second, c.cfg.AckWait)
	c.logger.Warn("publish result failed; handing the check back", "monitor", o.monitorID,
		"delivery", o.delivered, "retry_in", wait, "err", err)
	c.metrics.handedBack.Inc()
	_ = o.msg.NakWithDelay(wait)
}
