/*
 * Browser-side functions for the SafeStats borough map, referenced from Python as
 * {"variable": "safestats.map.<name>"} and resolved by dash-leaflet. The server sends the borough
 * boundaries once; after that only `hideout` changes (counts, class breaks, colours, the selected
 * borough) and Leaflet restyles the existing polygons with boroughStyle.
 */
window.safestats = Object.assign({}, window.safestats, {
    map: {
        // Fill from the count's class (classes are lower bounds, ascending); the selection gets a dark outline.
        boroughStyle: function (feature, context) {
            const h = (context && context.hideout) || {};
            window.safestats.map.lastHideout = h;  // for the mouseout repair in boroughOnEachFeature
            const code = feature.properties.code;
            const count = (h.counts && h.counts[code]) || 0;
            const classes = h.classes || [];
            const colours = h.colours || [];
            let fill = h.noDataColour || "#d9d9d9";
            for (let i = 0; i < classes.length; ++i) {
                if (count >= classes[i]) {
                    fill = colours[i];
                }
            }
            const selected = h.selected === code;
            return {
                ssSelected: selected,  // not a Leaflet option: read by the setStyle wrapper below
                fillColor: fill,
                fillOpacity: selected ? 0.9 : 0.8,
                color: selected ? (h.selectedOutline || "#1d2b3a") : "#ffffff",
                weight: selected ? 4 : 1.2,
                opacity: 1,
            };
        },
        // A name tooltip, stable attributes on each polygon (for assistive technology and the browser tests),
        // and the selected borough drawn on top so its heavy outline is not hidden under its neighbours'.
        boroughOnEachFeature: function (feature, layer) {
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
            layer.bindTooltip(props.name, {sticky: true, direction: "top", className: "ss-tooltip"});
            layer.on("mouseover", function () {
                hovered = true;
            });
            // dash-leaflet's hoverStyle restores, on mouseout, the style captured on mouseover. If the selection
            // changed while the pointer was over the borough (the usual case: it was just clicked), that style is
            // stale, so the current one is applied again (and the selection raised) once dash-leaflet is done.
            layer.on("mouseout", function () {
                hovered = false;
                setTimeout(function () {
                    const h = window.safestats.map.lastHideout;
                    if (h && layer._map && !hovered) {
                        layer.setStyle(window.safestats.map.boroughStyle(feature, {hideout: h}));
                    }
                }, 0);
            });
            layer.on("add", function () {
                const el = layer.getElement && layer.getElement();
                if (el) {
                    el.setAttribute("data-borough", props.code);
                    el.setAttribute("aria-label", props.name);
                }
            });
        },
    },
});
