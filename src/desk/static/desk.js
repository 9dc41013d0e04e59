// renkei desk — the only script (no inline script is allowed by the page's
// Content-Security-Policy). Everything here is convenience: every page
// works with forms alone.
"use strict";
(function () {
  // 西暦 → 和暦 beside date inputs.
  var ERAS = [["令和", 2019, 5, 1], ["平成", 1989, 1, 8], ["昭和", 1926, 12, 25], ["大正", 1912, 7, 30], ["明治", 1868, 10, 23]];
  function wareki(v) {
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v || "");
    if (!m) return "";
    var y = +m[1], mo = +m[2], d = +m[3];
    for (var i = 0; i < ERAS.length; i++) {
      var e = ERAS[i];
      if (y > e[1] || (y === e[1] && (mo > e[2] || (mo === e[2] && d >= e[3])))) {
        var n = y - e[1] + 1;
        return y + "年" + mo + "月" + d + "日（" + e[0] + (n === 1 ? "元" : n) + "年" + mo + "月" + d + "日）";
      }
    }
    return y + "年" + mo + "月" + d + "日";
  }
  document.querySelectorAll("input[data-wareki]").forEach(function (input) {
    var out = document.querySelector('[data-wareki-of="' + input.id + '"]');
    if (!out) return;
    var show = function () { out.textContent = wareki(input.value); };
    input.addEventListener("input", show);
    input.addEventListener("change", show);
    show();
  });

  // The addressee: fingerprint of the chosen certificate, and a search box.
  var to = document.querySelector("select[data-addressee]");
  var fp = document.querySelector("[data-fingerprint-view]");
  if (to && fp) {
    var showFp = function () {
      var o = to.options[to.selectedIndex];
      fp.textContent = (o && o.dataset.fingerprint) || "—";
    };
    to.addEventListener("change", showFp);
    showFp();
    var search = document.querySelector("input[data-directory-search]");
    if (search) {
      search.addEventListener("input", function () {
        var q = search.value.trim();
        var first = null;
        Array.prototype.forEach.call(to.options, function (o) {
          if (!o.value) return;
          var hit = !q || o.textContent.indexOf(q) >= 0;
          o.hidden = !hit;
          if (hit && !first) first = o;
        });
        if (q && first) { to.value = first.value; showFp(); }
      });
    }
  }

  // Changing the kind reloads the form for that kind.
  var kind = document.querySelector("select[data-kind-switch]");
  if (kind) {
    var initial = kind.value;
    kind.addEventListener("change", function () {
      var typed = Array.prototype.some.call(document.querySelectorAll("textarea, input[type=text]"), function (e) { return e.value.trim() !== "" && !e.defaultValue; });
      if (typed && !window.confirm("種類を変えると、入力中の内容は消えます。よろしいですか？")) { kind.value = initial; return; }
      var form = kind.form;
      var q = "?kind=" + encodeURIComponent(kind.value);
      var reply = form.querySelector("input[name=reply_to]");
      if (reply && reply.value) q += "&reply_to=" + encodeURIComponent(reply.value);
      var letter = form.querySelector("input[name=letter_mode]");
      if (letter && letter.value === "1") q += "&letter=1";
      window.location.href = "/compose" + q;
    });
  }

  // Drag and drop attachments onto the drop zone.
  var zone = document.querySelector("[data-dropzone]");
  if (zone) {
    var input = zone.querySelector("input[type=file]");
    var list = zone.querySelector("[data-chosen]");
    var render = function () {
      list.textContent = "";
      Array.prototype.forEach.call(input.files, function (f) {
        var li = document.createElement("li");
        li.textContent = f.name + "（" + Math.max(1, Math.round(f.size / 1024)) + " KB）";
        list.appendChild(li);
      });
    };
    input.addEventListener("change", render);
    ["dragenter", "dragover"].forEach(function (t) {
      zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      zone.addEventListener(t, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      var dt = new DataTransfer();
      Array.prototype.forEach.call(input.files, function (f) { dt.items.add(f); });
      Array.prototype.forEach.call(e.dataTransfer.files, function (f) { dt.items.add(f); });
      input.files = dt.files;
      render();
    });
  }

  // Print buttons.
  document.querySelectorAll("[data-action=print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });

  // The unread count in the tab title, and optional desktop notifications
  // (which never contain patient data).
  var body = document.body;
  var base = body.dataset.title;
  var last = +(body.dataset.unread || 0);
  var notifyOn = function () {
    try { return window.localStorage.getItem("renkei-notify") === "1"; } catch (e) { return false; }
  };
  var setTitle = function (n) {
    if (base) document.title = (n > 0 ? "(" + n + ") " : "") + base;
    document.querySelectorAll("[data-badge]").forEach(function (b) { b.textContent = n; b.hidden = n === 0; });
  };
  if (base) {
    window.setInterval(function () {
      fetch("/api/badge", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          if (j.unread > last && notifyOn() && "Notification" in window && Notification.permission === "granted") {
            new Notification("renkei 連携デスク", { body: "新しい受信があります（未読 " + j.unread + " 件）" });
          }
          last = j.unread;
          setTitle(j.unread);
        })
        .catch(function () {});
    }, 30000);
  }
  var nb = document.querySelector("[data-action=notifications]");
  var ns = document.querySelector("[data-notify-state]");
  if (nb) {
    var state = function () { if (ns) ns.textContent = notifyOn() ? "有効" : "無効"; };
    state();
    nb.addEventListener("click", function () {
      if (!("Notification" in window)) { if (ns) ns.textContent = "このブラウザは通知に対応していません"; return; }
      Notification.requestPermission().then(function (p) {
        try { window.localStorage.setItem("renkei-notify", p === "granted" ? "1" : "0"); } catch (e) {}
        state();
      });
    });
  }
})();
