(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("study-data").textContent);
  var pairs = data.pairs;
  var state = null;
  function $(id) { return document.getElementById(id); }
  function storageKey(participant) { return "iqabench-study:" + data.study_id + ":" + participant; }
  function save() {
    try { window.localStorage.setItem(storageKey(state.participant), JSON.stringify(state)); } catch (e) { /* private mode: no resume */ }
  }
  function restore(participant) {
    try {
      var text = window.localStorage.getItem(storageKey(participant));
      return text ? JSON.parse(text) : null;
    } catch (e) { return null; }
  }
  function show(section) {
    ["intro", "vote", "done"].forEach(function (name) { $(name).hidden = name !== section; });
  }
  function payload() {
    return {format: "iqabench-study-votes/v1", study_id: data.study_id, participant: state.participant,
            votes: state.votes};
  }
  function finish() {
    var text = JSON.stringify(payload(), null, 1);
    $("votes-json").value = text;
    var link = $("download");
    link.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
    link.download = "votes-" + state.participant.replace(/[^A-Za-z0-9_.-]/g, "_") + ".json";
    show("done");
  }
  function render() {
    if (state.index >= pairs.length) { finish(); return; }
    var pair = pairs[state.index];
    $("prompt").textContent = pair.prompt;
    $("left-img").src = pair.left;
    $("right-img").src = pair.right;
    $("progress").textContent = (state.index + 1) + " / " + pairs.length;
    show("vote");
  }
  function choose(choice) {
    if (!state || state.index >= pairs.length) { return; }
    state.votes.push({pair_id: pairs[state.index].pair_id, choice: choice, time: new Date().toISOString()});
    state.index += 1;
    save();
    render();
  }
  $("start").addEventListener("click", function () {
    var participant = $("participant").value.trim();
    if (!participant) { $("intro-error").textContent = "Please enter your participant ID first."; return; }
    state = restore(participant) || {participant: participant, index: 0, votes: []};
    render();
  });
  $("choose-left").addEventListener("click", function () { choose("left"); });
  $("choose-equal").addEventListener("click", function () { choose("equal"); });
  $("choose-right").addEventListener("click", function () { choose("right"); });
  document.addEventListener("keydown", function (event) {
    if ($("vote").hidden) { return; }
    if (event.key === "ArrowLeft" || event.key === "1") { choose("left"); }
    else if (event.key === "ArrowDown" || event.key === "2") { choose("equal"); }
    else if (event.key === "ArrowRight" || event.key === "3") { choose("right"); }
  });
  $("n-pairs").textContent = String(pairs.length);
  show("intro");
})();
