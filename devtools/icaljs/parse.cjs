// Independent check of our ICS output: parse stdin with Mozilla's ical.js and print the
// events as JSON (uid, summary, UTC start/end, sequence, status), or exit 1 with the error.
const ICAL = require("ical.js");

let text = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { text += chunk; });
process.stdin.on("end", () => {
  try {
    const root = new ICAL.Component(ICAL.parse(text));
    const events = root.getAllSubcomponents("vevent").map((v) => {
      const ev = new ICAL.Event(v);
      return {
        uid: ev.uid,
        summary: ev.summary,
        start: ev.startDate.toJSDate().toISOString(),
        end: ev.endDate.toJSDate().toISOString(),
        sequence: ev.sequence,
        status: v.getFirstPropertyValue("status"),
      };
    });
    const cal = {
      name: root.getFirstPropertyValue("x-wr-calname"),
      method: root.getFirstPropertyValue("method"),
      uid: root.getFirstPropertyValue("uid"),
      events,
    };
    process.stdout.write(JSON.stringify(cal));
  } catch (err) {
    process.stderr.write(String(err && err.stack ? err.stack : err));
    process.exit(1);
  }
});
