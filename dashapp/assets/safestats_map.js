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
            layer.setStyle = function (style) {
                const result = setStyle(style);
                if (style && style.ssSelected && layer._map) {
                    layer.bringToFront();
                }
                return result;
            };
            layer.bindTooltip(props.name, {sticky: true, direction: "top", className: "ss-tooltip"});
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
