// depth2img web UI: the 3-D parallax view (2-D canvas, no libraries) and Ctrl+Enter to generate.
// Shipped in the package and served by the app; the page fetches nothing from another host.
(function () {
  "use strict";
  var state = { src: null, depth: null, w: 0, h: 0, tx: 0, ty: 0, pending: false };

  function pixels(url, w, h) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () {
        var c = document.createElement("canvas");
        c.width = w || img.naturalWidth; c.height = h || img.naturalHeight;
        var g = c.getContext("2d");
        g.drawImage(img, 0, 0, c.width, c.height);
        resolve(g.getImageData(0, 0, c.width, c.height));
      };
      img.onerror = reject;
      img.src = url;
    });
  }

  function canvas() { return document.getElementById("d2i-parallax-canvas"); }
  function scale() {
    var s = document.getElementById("d2i-parallax-scale");
    return s ? parseFloat(s.value) : 0.05;
  }

  // Each output pixel samples the photo shifted by tilt x depth (near pixels move most).
  function draw() {
    state.pending = false;
    var cv = canvas();
    if (!cv || !state.src) return;
    var w = state.w, h = state.h;
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    var g = cv.getContext("2d");
    var out = g.createImageData(w, h), o = out.data, s = state.src.data, d = state.depth.data;
    var k = scale() * Math.max(w, h), dx = state.tx * k, dy = state.ty * k;
    for (var y = 0; y < h; y++) {
      for (var x = 0; x < w; x++) {
        var i = (y * w + x) * 4, z = d[i] / 255 - 0.5;
        var sx = Math.min(w - 1, Math.max(0, Math.round(x - dx * z)));
        var sy = Math.min(h - 1, Math.max(0, Math.round(y - dy * z)));
        var j = (sy * w + sx) * 4;
        o[i] = s[j]; o[i + 1] = s[j + 1]; o[i + 2] = s[j + 2]; o[i + 3] = 255;
      }
    }
    g.putImageData(out, 0, 0);
  }
  function request() {
    if (!state.pending) { state.pending = true; window.requestAnimationFrame(draw); }
  }

  function tilt(clientX, clientY) {
    var cv = canvas();
    if (!cv) return;
    var r = cv.getBoundingClientRect();
    state.tx = ((clientX - r.left) / r.width - 0.5) * 2;
    state.ty = ((clientY - r.top) / r.height - 0.5) * 2;
    request();
  }

  document.addEventListener("mousemove", function (e) {
    if (e.target && e.target.id === "d2i-parallax-canvas") tilt(e.clientX, e.clientY);
  });
  document.addEventListener("touchmove", function (e) {
    if (e.target && e.target.id === "d2i-parallax-canvas" && e.touches.length) {
      tilt(e.touches[0].clientX, e.touches[0].clientY);
      e.preventDefault();
    }
  }, { passive: false });
  document.addEventListener("input", function (e) {
    if (e.target && e.target.id === "d2i-parallax-scale") request();
  });

  // Ctrl+Enter (Cmd+Enter) clicks the Generate button of the visible tab, as in A1111.
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    var buttons = document.querySelectorAll("#img2img-generate, #inpaint-generate");
    for (var n = 0; n < buttons.length; n++) {
      if (buttons[n].offsetParent !== null) { e.preventDefault(); buttons[n].click(); return; }
    }
  });

  window.depth2imgParallax = {
    load: function (imageUrl, depthUrl) {
      return pixels(depthUrl).then(function (depth) {
        return pixels(imageUrl, depth.width, depth.height).then(function (src) {
          state.src = src; state.depth = depth; state.w = depth.width; state.h = depth.height;
          state.tx = 0; state.ty = 0;
          draw();
        });
      });
    },
    state: state,
  };
})();
