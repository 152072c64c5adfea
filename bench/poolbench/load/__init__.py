"""The Locust side of poolbench: the scenario user base, the open model, shapes, the window."""
