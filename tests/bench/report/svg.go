package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
)

// Plot geometry, in SVG user units.
const (
	plotWidth   = 1000.0
	marginLeft  = 80.0
	marginRight = 170.0 // room for the legend
	panelHeight = 160.0
	panelGap    = 60.0
	headerH     = 60.0
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

type line struct {
	name   string
	color  string
	dashed bool
	ys     []*float64 // aligned with the series' T; nil breaks the line
}

type panel struct {
	title string
	unit  string
	lines []line
}

// SVG draws the run over time as four stacked panels sharing the time
// axis: checks stored per second, lag p99 by due second, CHECKS depth and
// CPU per process. The measured window is shaded.
func SVG(w io.Writer, r *Result) error {
	s := r.Series
	panels := []panel{
		{title: "checks stored per second", unit: "checks/s", lines: []line{
			{name: "stored", color: palette[0], ys: ptrs(s.ChecksPerSecond)},
			{name: "due", color: "#999999", dashed: true,
				ys: constant(len(s.T), float64(r.Monitors)/r.IntervalSeconds)},
		}},
		{title: "scheduling lag p99, by due second", unit: "seconds", lines: []line{
			{name: "lag p99", color: palette[1], ys: s.LagP99Seconds},
		}},
		{title: "CHECKS stream depth", unit: "messages", lines: []line{
			{name: "depth", color: palette[2], ys: s.ChecksDepth},
		}},
	}
	cpu := panel{title: "CPU per process (100% = one core)", unit: "% CPU"}
	for i, name := range ProcessOrder {
		if ys, ok := s.CPUPercent[name]; ok {
			cpu.lines = append(cpu.lines, line{name: name, color: palette[i%len(palette)], ys: ptrs(ys)})
		}
	}
	panels = append(panels, cpu)

	height := headerH + float64(len(panels))*(panelHeight+panelGap)
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { _, _ = fmt.Fprintf(bw, format, a...) }
	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		plotWidth, height, plotWidth, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%.0f" y="24" font-size="16" font-weight="bold">upwatch bench: %s</text>`+"\n", marginLeft,
		xmlEscape(fmt.Sprintf("%s, %d monitors every %gs", r.Workload, r.Monitors, r.IntervalSeconds)))
	p(`<text x="%.0f" y="44" fill="#555">%s</text>`+"\n", marginLeft,
		xmlEscape(fmt.Sprintf("%s · %d CPU · %s · shaded: measured window (%gs)", r.Date, r.Machine.NProc,
			r.Machine.CPUModel, r.DurationSeconds+r.OutageSeconds)))

	if len(s.T) == 0 {
		p(`<text x="%.0f" y="%.0f">no samples</text>`+"\n", marginLeft, headerH+20)
		p("</svg>\n")
		return bw.Flush()
	}
	t0, t1 := float64(s.T[0]), float64(s.T[len(s.T)-1])
	if t1 <= t0 {
		t1 = t0 + 1
	}
	innerW := plotWidth - marginLeft - marginRight
	xOf := func(t float64) float64 { return marginLeft + (t-t0)/(t1-t0)*innerW }
	xStep := niceStep((t1 - t0) / 10)
	windowEnd := r.DurationSeconds + r.OutageSeconds

	for i, pn := range panels {
		top := headerH + float64(i)*(panelHeight+panelGap) + 20
		bottom := top + panelHeight
		ymax := 0.0
		for _, l := range pn.lines {
			for _, y := range l.ys {
				if y != nil && !math.IsNaN(*y) {
					ymax = math.Max(ymax, *y)
				}
			}
		}
		yStep := niceStep(math.Max(ymax, 1e-9) / 4)
		if ymax <= 0 {
			yStep = 1
		}
		ytop := yStep * math.Max(1, math.Ceil(ymax/yStep))
		yOf := func(v float64) float64 { return bottom - v/ytop*panelHeight }

		p(`<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s</text>`+"\n", marginLeft, top-8, xmlEscape(pn.title))
		// Measured window.
		wx0, wx1 := xOf(math.Max(t0, 0)), xOf(math.Min(t1, windowEnd))
		if wx1 > wx0 {
			p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#eef3fb"/>`+"\n", wx0, top, wx1-wx0, panelHeight)
		}
		// Horizontal grid and y labels.
		for v := 0.0; v <= ytop+yStep/2; v += yStep {
			y := yOf(v)
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", marginLeft, y, marginLeft+innerW, y)
			p(`<text x="%.1f" y="%.1f" text-anchor="end" fill="#333">%s</text>`+"\n", marginLeft-6, y+4, label(v))
		}
		// Time axis.
		for t := math.Ceil(t0/xStep) * xStep; t <= t1; t += xStep {
			x := xOf(t)
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x, top, x, bottom)
			p(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", x, bottom+15, label(t))
		}
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`+"\n", marginLeft, top, innerW, panelHeight)
		p(`<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">time from window start (s)</text>`+"\n",
			marginLeft+innerW/2, bottom+32)
		p(`<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle" fill="#555">%s</text>`+"\n",
			marginLeft-52, top+panelHeight/2, xmlEscape(pn.unit))

		for j, l := range pn.lines {
			var path strings.Builder
			pen := false
			for k, y := range l.ys {
				if k >= len(s.T) || y == nil || math.IsNaN(*y) {
					pen = false
					continue
				}
				x := xOf(float64(s.T[k]))
				// A point with no neighbour would draw nothing as a path;
				// mark it (a burst has a single due second).
				alone := (k == 0 || l.ys[k-1] == nil) && (k+1 >= len(l.ys) || l.ys[k+1] == nil)
				if alone {
					p(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x, yOf(*y), l.color)
				}
				cmd := "L"
				if !pen {
					cmd = "M"
				}
				fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, x, yOf(*y))
				pen = true
			}
			dash := ""
			if l.dashed {
				dash = ` stroke-dasharray="6 4"`
			}
			if path.Len() > 0 {
				p(`<path d="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`+"\n", strings.TrimSpace(path.String()), l.color, dash)
			}
			// Legend, right of the panel.
			ly := top + 14 + float64(j)*18
			lx := marginLeft + innerW + 14
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"%s/>`+"\n", lx, ly-4, lx+20, ly-4, l.color, dash)
			p(`<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+26, ly, xmlEscape(l.name))
		}
	}
	p("</svg>\n")
	return bw.Flush()
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func label(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e5)/10)
	case a >= 1e4:
		return fmt.Sprintf("%gk", math.Round(v/100)/10)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

func ptrs(v []float64) []*float64 {
	out := make([]*float64, len(v))
	for i := range v {
		out[i] = &v[i]
	}
	return out
}

func constant(n int, v float64) []*float64 {
	out := make([]*float64, n)
	for i := range out {
		out[i] = &v
	}
	return out
}
