SELECT region, COUNT(*) AS n
FROM {{ df_1 }}
GROUP BY region
