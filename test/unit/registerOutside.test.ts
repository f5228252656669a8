/** Outside the Functions worker nothing is registered (no "test mode" warnings) and the specs come back for the local host. */
import { app } from "@azure/functions";
import { defineFunctions, underFunctionsWorker } from "../../lib/app/register";

test("outside the worker the specs are returned and nothing is registered", () => {
  expect(underFunctionsWorker()).toBe(false);
  const http = jest.spyOn(app, "http");
  const warn = jest.spyOn(console, "warn");
  const specs = defineFunctions([
    { kind: "http", name: "listDisks", route: "disks", methods: ["GET"], handler: jest.fn() },
  ]);
  expect(specs.map((s) => s.name)).toEqual(["listDisks"]);
  expect(http).not.toHaveBeenCalled();
  expect(warn).not.toHaveBeenCalled();
});
