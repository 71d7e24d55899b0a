"""Study presets shipped with retland (`retland study demo|cpu-small|paper|paper-hopper-td3|minatar`)."""
