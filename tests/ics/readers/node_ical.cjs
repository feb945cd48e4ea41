// Reads an iCalendar body from stdin with node-ical and prints what a client would show, as JSON.
const ical = require("node-ical");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const data = ical.sync.parseICS(input);
  const events = [];
  let name = null;
  for (const item of Object.values(data)) {
    if (item.type === "VCALENDAR") {
      name = item["WR-CALNAME"] ?? null;
    }
    if (item.type !== "VEVENT") continue;
    events.push({
      uid: item.uid,
      summary: typeof item.summary === "object" && item.summary !== null ? item.summary.val : item.summary,
      start: item.start.toISOString(),
      end: item.end.toISOString(),
      sequence: item.sequence === undefined ? null : Number(item.sequence),
      url: typeof item.url === "object" && item.url !== null ? item.url.val : (item.url ?? null),
    });
  }
  process.stdout.write(JSON.stringify({ name, events }));
});
