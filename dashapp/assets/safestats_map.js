/*
 * Browser-side functions for the SafeStats map, referenced from Python as {"variable": "safestats.map.<name>"}
 * and resolved by dash-leaflet. The server sends each level's boundaries once; after that only `hideout`
 * changes (value per area, class bounds, colours, the selection, or `hidden` for the levels not shown) and
 * Leaflet restyles the existing polygons with areaStyle.
 */
window.safestats = Object.assign({}, window.safestats, {
    map: {
        // Fill from the value's class (classes are lower bounds, ascending); the selection gets a dark outline.
        // A hidden level draws nothing, and an SVG path with neither fill nor stroke takes no clicks.
        areaStyle: function (feature, context) {
            const h = (context && context.hideout) || {};
            if (h.hidden) {
                return {fill: false, stroke: false, ssSelected: false};
            }
            window.safestats.map.lastHideout = h;  // for the mouseout repair in areaOnEachFeature
            const code = feature.properties.code;
            const value = h.values ? h.values[code] : undefined;
            const classes = h.classes || [];
            const colours = h.colours || [];
            let fill = h.noDataColour || "#d9d9d9";
            if (value !== undefined && value !== null) {
                for (let i = 0; i < classes.length; ++i) {
                    if (value >= classes[i]) {
                        fill = colours[i];
                    }
                }
            }
            const selected = h.selected === code;
            return {
                ssSelected: selected,  // not a Leaflet option: read by the setStyle wrapper below
                fill: true,
                stroke: true,
                fillColor: fill,
                fillOpacity: selected ? 0.9 : 0.75,
                color: selected ? (h.selectedOutline || "#1d2b3a") : "#ffffff",
                weight: selected ? 4 : 1,
                opacity: 1,
            };
        },
        // A tooltip with the name and value, stable attributes on each polygon (for assistive technology and
        // the browser tests), and the selected area drawn on top so its outline is not hidden by neighbours.
        areaOnEachFeature: function (feature, layer) {
            const props = feature.properties;
            const setStyle = layer.setStyle.bind(layer);
            let hovered = false;
            layer.setStyle = function (style) {
                const result = setStyle(style);
                // Raising a path re-inserts its SVG node; under the pointer that loses the browser's hover state
                // (no mouseout ever comes), so a hovered selection is raised when the pointer leaves instead.
                if (style && style.ssSelected && layer._map && !hovered) {
                    layer.bringToFront();
                }
                return result;
            };
            layer.bindTooltip(function () {
                const h = window.safestats.map.lastHideout || {};
                const value = h.values ? h.values[props.code] : undefined;
                const suppressed = (h.suppressed || []).includes(props.code);
                const shown = suppressed ? "* (fewer than 8)" : (value === undefined || value === null) ? "no data"
                    : Number(value).toLocaleString("en-GB", {maximumFractionDigits: 1});
                return props.name + ": " + shown;
            }, {sticky: true, direction: "top", className: "ss-tooltip"});
            layer.on("mouseover", function () {
                hovered = true;
            });
            // dash-leaflet's hoverStyle restores, on mouseout, the style captured on mouseover. If the selection
            // changed while the pointer was over the area (the usual case: it was just clicked), that style is
            // stale, so the current one is applied again (and the selection raised) once dash-leaflet is done.
            layer.on("mouseout", function () {
                hovered = false;
                setTimeout(function () {
                    const h = window.safestats.map.lastHideout;
                    if (h && layer._map && !hovered && !(layer.options && layer.options.stroke === false)) {
                        layer.setStyle(window.safestats.map.areaStyle(feature, {hideout: h}));
                    }
                }, 0);
            });
            layer.on("add", function () {
                const el = layer.getElement && layer.getElement();
                if (el) {
                    el.setAttribute("data-area", props.code);
                    el.setAttribute("aria-label", props.name);
                }
            });
        },
        // Hotspot cells or LSOAs: fill by the feature's class (Gi* class, emerging category or comparison
        // transition) from hideout.colours; the picked one gets a dark outline.
        hotspotStyle: function (feature, context) {
            const h = (context && context.hideout) || {};
            const colours = h.colours || {};
            const selected = h.selected !== null && h.selected !== undefined && h.selected === feature.id;
            return {
                fill: true, stroke: true, fillOpacity: selected ? 0.9 : 0.7, opacity: 1,
                fillColor: colours[String(feature.properties["class"])] || "#bdbdbd",
                color: selected ? "#1d2b3a" : "#ffffff", weight: selected ? 3 : 0.5,
            };
        },
        // The numbers behind a hotspot in its tooltip (count, z, p, class), and stable attributes for tests.
        hotspotOnEachFeature: function (feature, layer) {
            const p = feature.properties;
            const fmt = function (v, digits) {
                return Number(v).toLocaleString("en-GB", {maximumFractionDigits: digits, minimumFractionDigits: 0});
            };
            const lines = ["<strong>" + (p.name ? p.name + ": " : "") + p.label + "</strong>"];
            if (p.count_before !== undefined) {
                lines.push("Incidents: " + fmt(p.count_before, 0) + " → " + fmt(p.count, 0)
                           + " (" + (p.change >= 0 ? "+" : "") + fmt(p.change, 0) + ")");
                lines.push("Gi* z: " + fmt(p.z_before, 2) + " → " + fmt(p.z, 2));
                lines.push("Before: " + p.class_before + "; after: " + p.class_after);
            } else {
                lines.push("Incidents: " + fmt(p.count, 0) + (p.steps ? " (latest step; " + fmt(p.total, 0)
                           + " in all steps)" : ""));
                lines.push("Gi* z: " + fmt(p.z, 2) + ", p = " + fmt(p.p, 4)
                           + (p.p_fdr !== undefined ? " (FDR-adjusted p = " + fmt(p.p_fdr, 4) + ")" : ""));
                if (p.steps) {
                    lines.push("Hot in " + p.hot_steps + " of " + p.steps + " time steps");
                }
            }
            layer.bindTooltip(lines.join("<br>"), {sticky: true, direction: "top", className: "ss-tooltip"});
            layer.on("add", function () {
                const el = layer.getElement && layer.getElement();
                if (el) {
                    el.setAttribute("data-hotspot", feature.id);
                    el.setAttribute("data-class", String(p["class"]));
                    el.setAttribute("aria-label", p.label);
                }
            });
        },
        // Server-side clusters: a circle sized by its count (square-root scale), the count as a tooltip.
        clusterToLayer: function (feature, latlng) {
            const n = feature.properties.count || 1;
            const marker = L.circleMarker(latlng, {
                radius: Math.min(22, 4 + 3 * Math.sqrt(n)), color: "#1d2b3a", weight: 1,
                fillColor: "#9e0059", fillOpacity: 0.7,
            });
            marker.bindTooltip(n === 1 ? "1 incident" : n.toLocaleString("en-GB") + " incidents");
            return marker;
        },
    },
});
