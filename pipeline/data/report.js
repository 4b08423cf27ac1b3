(function () {
  const map = L.map('map', {preferCanvas: false, zoomSnap: 0.25});
  const none = L.layerGroup();
  const bases = {
    'No background (offline)': none,
    'Satellite, Esri World Imagery (online)': L.tileLayer(
      'https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}',
      {maxZoom: 19, attribution: 'Imagery &copy; Esri, Maxar, Earthstar Geographics'}),
    'OpenStreetMap (online)': L.tileLayer('https://tile.openstreetmap.org/{z}/{x}/{y}.png',
      {maxZoom: 19, attribution: '&copy; OpenStreetMap contributors'})
  };
  none.addTo(map);
  const aoi = L.geoJSON(RUN.aoi, {style: {color: '#333', weight: 1.5, dashArray: '4 4', fill: false},
    interactive: false}).addTo(map);
  function style(name) {
    const s = RUN.symbols[name];
    return function (f) {
      const c = RUN.colours[String(f.properties.first_year)] || '#999';
      return {className: 'kw-' + name, color: s.outline || c, weight: s.width_mm > 0 ? s.width_mm * 3.78 : 0,
        opacity: s.width_mm > 0 ? 1 : 0, fillColor: c, fillOpacity: s.fill_opacity, fill: s.fill_opacity > 0};
    };
  }
  const LABELS = {first_year: 'first year', last_year: 'last year', months_seen: 'months seen', area_m2: 'area (m²)',
    mean_slope_deg: 'mean slope (°)', bare_share: 'bare share of clear views', green_share: 'green share of clear views',
    n_ponds: 'ponds', n_clearings: 'clearings', pond_area_m2: 'pond area (m²)', cleared_area_m2: 'cleared area (m²)',
    footprint_m2: 'footprint (m²)', envelope_m2: 'envelope (m²)'};
  function evidence(name, p) {
    if (name === 'ponds') return 'water confirmed over ' + p.months_seen + ' months';
    if (name === 'clearings') return 'bare in ' + Math.round(100 * p.bare_share) + '% and green in ' +
      Math.round(100 * p.green_share) + '% of clear views while active, over ' + p.months_seen + ' months';
    return p.n_ponds + ' ponds and ' + p.n_clearings + ' clearings linked within the site distance' +
      (p.provisional ? '; provisional: only young clearings, no pond yet (a later run confirms or drops it)' : '');
  }
  function popup(name) {
    return function (f, layer) {
      const p = f.properties;
      let rows = '', chips = '';
      for (const [k, caption] of [['chip_before', 'before its first year'], ['chip_after', 'latest dry season']]) {
        if (p[k]) chips += '<figure class="chip"><img src="' + p[k] + '" alt="' + caption + '"><figcaption>' +
          caption + '</figcaption></figure>';
      }
      for (const k in p) {
        if (k.startsWith('chip_')) continue;
        let v = p[k];
        if (v === null) v = 'n/a';
        else if (typeof v === 'number' && !Number.isInteger(v)) v = v.toLocaleString(undefined, {maximumFractionDigits: 2});
        else if (typeof v === 'number' && k.endsWith('_m2')) v = v.toLocaleString();
        rows += '<tr><th>' + (LABELS[k] || k.replace(/_/g, ' ')) + '</th><td>' + v + '</td></tr>';
      }
      layer.bindPopup('<div class="popup"><b>' + RUN.titles[name].split(' (')[0] + '</b><br><i>evidence: ' +
        evidence(name, p) + '</i>' + (chips ? '<div class="chips">' + chips + '</div>' : '') +
        '<table>' + rows + '</table></div>');
    };
  }
  const groups = {}, overlays = {};
  for (const name of ['clearings', 'ponds', 'sites']) {
    const fc = RUN.layers[name];
    groups[name] = L.geoJSON(fc, {style: style(name), onEachFeature: popup(name)}).addTo(map);
    overlays[RUN.titles[name] + ' (' + fc.features.length + ')'] = groups[name];
  }
  overlays['AOI outline'] = aoi;
  L.control.layers(bases, overlays, {collapsed: false}).addTo(map);
  L.control.scale({imperial: false}).addTo(map);
  map.fitBounds(aoi.getBounds(), {padding: [10, 10]});
  const slider = document.getElementById('year'), label = document.getElementById('year-label');
  function showYear(y) {
    label.textContent = y;
    for (const name in groups) {
      groups[name].eachLayer(function (l) {
        const on = l.feature.properties.first_year <= y;
        l.setStyle(on ? style(name)(l.feature) : {opacity: 0, fillOpacity: 0});
        if (l.getElement()) l.getElement().style.pointerEvents = on ? '' : 'none';
      });
    }
    document.body.dataset.year = y;
  }
  // report.html#year=2022 opens the map at that year (a link for a briefing note)
  const wanted = location.hash.match(/year=(\d{4})/);
  if (wanted) slider.value = wanted[1];
  slider.addEventListener('input', function () { showYear(+slider.value); });
  showYear(+slider.value);
  // report.html#site=14 zooms to that site (register id) and opens its popup: the changes table links here
  function openSite(id) {
    groups.sites.eachLayer(function (l) {
      if (String(l.feature.properties.site_id) !== id) return;
      map.fitBounds(l.getBounds(), {maxZoom: 16, animate: false});
      l.openPopup();
      document.body.dataset.site = id;
    });
  }
  const site = location.hash.match(/site=(\d+)/);
  if (site) openSite(site[1]);
  window.addEventListener('hashchange', function () {
    const m = location.hash.match(/site=(\d+)/);
    if (m) openSite(m[1]);
  });
  document.body.dataset.mapReady = '1';
})();
