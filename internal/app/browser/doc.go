// Package browser holds the browser tests of the console (/console) and the
// playground (/): Go tests that start a real Latchkey server (apptest) and drive
// Debian's Chromium through chromedp, as a new user would. They need Chromium
// (apt-get install chromium; CHROME_PATH picks another binary) and fail, never
// skip, without it; .ci/run installs it when it is missing.
//
// On failure each test saves a screenshot of the page to its artifact directory
// (go test -artifacts -outputdir DIR; make test writes to test-output/). With
// CONSOLE_SCREENSHOTS=DIR the console test also saves every view at 1280 and 390
// pixels wide, for looking at.
package browser
