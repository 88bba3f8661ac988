/* replaced by the dashboard page (branch fe) */
