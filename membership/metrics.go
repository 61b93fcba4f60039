package membership

import "github.com/prometheus/client_golang/prometheus"

var membersDesc = prometheus.NewDesc("lunora_members",
	"Members this process has seen (itself included), by status and role; dead and left members stay counted.",
	[]string{"status", "role"}, nil)

// collector reports lunora_members from the member table at scrape time.
type collector struct{ m *Membership }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		status Status
		role   Role
	}
	counts := map[key]int{}
	roles := map[Role]bool{RoleNode: true, RoleGateway: true}
	c.m.mu.Lock()
	for _, st := range c.m.members {
		counts[key{st.Status, st.Role}]++
		roles[st.Role] = true
	}
	c.m.mu.Unlock()
	for role := range roles {
		for _, status := range []Status{Alive, Suspect, Dead, Left} {
			ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue,
				float64(counts[key{status, role}]), string(status), string(role))
		}
	}
}
